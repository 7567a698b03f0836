"""The weight of the training tag bigrams in NER decoding, tuned on dev after training.

The token-classification head scores each word alone; the path through a sentence is the best valid
IOB2 path (lmforge.tasks.iob_viterbi). After training, lmforge also scores that path by how tags
followed each other in the training data (log P(tag | previous tag), `TagTransitions`), added with
the weight from `WEIGHTS` that gives the highest dev entity F1 (the smallest on a tie, so 0 stays
unless the bigrams help). The dev logits are computed once and decoded at every weight. The weight
goes into labels.json, which `Predictor.from_run` reads, so evaluate, predict, explain, serve and
the studio decode alike; how it was chosen goes into run.json and metrics.json.
"""

from __future__ import annotations

from ..evaluation.ner_metrics import entity_f1, entity_report
from ..files import read_json, write_json_atomic
from ..inference import run_batches
from ..runs import LABELS
from ..tasks.iob_viterbi import WEIGHTS


def choose_weight(predictor, dev: list, encoded: tuple | None = None) -> tuple[dict, list[dict]]:
    """Decode the dev examples at every weight; returns what run.json / metrics.json record, and the
    dev predictions at the chosen weight (so that dev is not run through the model again).
    `encoded`: (decoding plan, logits) of dev from this predictor's model, already computed."""
    task = predictor.task
    if encoded is None:
        features, plan = task.encode_for_inference(dev)
        encoded = plan, run_batches(features, predictor.tokenizer.pad_token_id, predictor.forward)
    plan, outputs = encoded
    word_logp = task.word_log_probs(dev, plan, outputs)
    gold = [ex.tags for ex in dev]
    by_weight = {}
    for weight in WEIGHTS:  # the tags alone at each weight, scored as seqeval scores them (entity_f1)
        task.tag_transitions.weight = weight
        tags = task.tags(word_logp)
        f1 = entity_f1(gold, tags)
        by_weight[weight] = f1 if f1 is not None else entity_report(gold, tags)["f1"]
    best = max(WEIGHTS, key=lambda w: (by_weight[w], -w))
    task.tag_transitions.weight = best
    predictions = task.predictions(dev, word_logp)
    return {"value": best, "chosen_on": "dev", "dev_examples": len(dev),
            "method": "the weight of the training tag bigrams that maximises dev entity F1 (smallest on a tie)",
            "dev_f1_by_weight": {str(w): round(f1, 5) for w, f1 in by_weight.items()}}, predictions


def save_weight(run_dir, choice: dict) -> None:
    """Store the weight where the predictor reads it (labels.json)."""
    labels = read_json(run_dir / LABELS)
    labels["transitions"]["weight"] = choice["value"]
    write_json_atomic(run_dir / LABELS, labels)
