"""NER decoding with and without the training tag bigrams, side by side on the same trained model:
the best valid IOB2 path over the words' tag probabilities alone (weight 0, lmforge's decoding before)
against the same path scored with log P(tag | previous tag) from the training tags times the weight
lmforge tunes on dev after training (lmforge.training.transitions, what new runs do).

    python bench/ner_transitions.py --run RUN --data DEV_FILE TEST_FILE [--name ner_transitions] [--label weibo-seed42]

Any trained NER run folder works (`bench/multilingual.py --keep-runs DIR` keeps its runs): the bigrams
are counted on the run's own training file (its config.yaml), the weight is chosen on DEV_FILE exactly
as training does, and every file is scored at every weight (so the dev-chosen weight can be read
against the test optimum). Results are added to bench/results/NAME.json under the label.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", type=Path, nargs=2, required=True, metavar=("DEV_FILE", "TEST_FILE"))
    parser.add_argument("--name", default="ner_transitions")
    parser.add_argument("--label", default=None, help="key of this run in the results file; default: the run folder's name")
    args = parser.parse_args()

    from lmforge.data.load import read_split
    from lmforge.inference import run_batches
    from lmforge.predictor import Predictor
    from lmforge.tasks.iob_viterbi import WEIGHTS, TagTransitions
    from lmforge.training.transitions import choose_weight

    predictor = Predictor.from_run(args.run)
    task = predictor.task
    if not task.token_level:
        sys.exit(f"{args.run}: not a token-classification run")
    cfg = predictor.config
    train_files = cfg.data.train if isinstance(cfg.data.train, list) else [cfg.data.train]
    train = [ex for f in train_files for ex in read_split(cfg, (args.run / f) if not Path(f).is_absolute() else Path(f), scheme="auto")[0]]
    task.tag_transitions = TagTransitions.from_training((ex.tags for ex in train), task.labels)
    dev, _ = read_split(cfg, args.data[0], scheme="auto")
    test, _ = read_split(cfg, args.data[1], scheme="auto")
    chosen = choose_weight(predictor, dev)[0]["value"]
    result: dict = {"run": str(args.run), "train_sentences": len(train), "weight_chosen_on_dev": chosen}
    for path, examples in zip(args.data, (dev, test)):
        row = {}
        features, plan = task.encode_for_inference(examples)  # one forward pass per file, decoded at every weight
        outputs = run_batches(features, predictor.tokenizer.pad_token_id, predictor.forward)
        for weight in WEIGHTS:
            task.tag_transitions.weight = weight
            report = task.metrics(examples, task.decode(examples, plan, outputs))
            row[str(weight)] = {k: round(report[k] * 100, 2) for k in ("f1", "precision", "recall")}
        row["f1_gain_at_chosen"] = round(row[str(chosen)]["f1"] - row["0.0"]["f1"], 2)
        result[path.name] = row
        print(path.name, f"weight {chosen}:", json.dumps(row), flush=True)
    save_run(args.name, args.label or args.run.name, result)


if __name__ == "__main__":
    main()
