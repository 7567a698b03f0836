"""Token classification (NER): word-level tags in IOB2, sub-word alignment, document context and
sliding windows, decoding back to entities with character offsets."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.schemes import tags_to_spans
from ..data.types import TokenExample
from ..data.windows import best_window_per_word, pack_sentences, word_windows
from ..data.words import CJK_CHAR
from ..errors import DataError, UserError
from ..evaluation.report import ReportStyle
from .base import Feature, TaskBase
from .iob_viterbi import TagTransitions, allowed_transitions, best_valid_paths, repair_iob2  # noqa: F401 - repair_iob2 re-exported
from .registry import DEFAULT_LEARNING_RATES, TaskSpec, refuse_keys, register

IGNORE = -100
if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass
class DocPlan:
    """How one document's words map onto inference windows."""

    members: list[tuple[int, int]]  # flat word -> (example index, word index)
    word_lens: list[int]
    spans: list[tuple[int, int]]  # window -> (start word, end word)
    features: list[int]  # window -> feature index
    best: list[int]  # flat word -> window index


class TokenClassificationTask(TaskBase):
    name = "token-classification"
    token_level = True

    def __init__(self, labels: list[str], tokenizer, max_length: int, document_context: bool = True, inner_cjk_pieces: bool = True,
                 viterbi: bool = True, tag_transitions: TagTransitions | None = None):
        self.labels = list(labels)
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.window = max_length - 2  # room for [CLS] and [SEP]
        self.document_context = document_context
        self.truncated = 0  # NER never truncates: long texts are windowed
        # lone CJK characters as their inner SentencePiece piece (see _unmarked_cjk); runs trained before
        # this existed (labels.json without "cjk_pieces") keep the word-start pieces they were trained on
        self.inner_cjk_pieces = inner_cjk_pieces
        self._unmarked: dict[int, int] | None = None
        # tags decoded as the best valid IOB2 path (iob_viterbi); runs saved before (labels.json without
        # "decoding") keep per-word argmax + repair, as their figures were measured
        self.viterbi = viterbi
        self.transitions = allowed_transitions(self.labels)
        self.tag_transitions = tag_transitions  # training tag bigrams, weighted into the path once tuned on dev

    @staticmethod
    def discover_labels(examples: list[TokenExample]) -> list[str]:
        tags = {t for ex in examples for t in ex.tags} | {"O"}
        types = sorted({t[2:] for t in tags if t != "O"})
        return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]

    def model_class(self) -> type:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    def model_kwargs(self) -> dict[str, Any]:
        return {"num_labels": len(self.labels), "id2label": dict(enumerate(self.labels)), "label2id": dict(self.index)}

    def to_json(self) -> dict:
        out = {"task": self.name, "labels": self.labels, "document_context": self.document_context}
        if self.inner_cjk_pieces:
            out["cjk_pieces"] = "inner"
        if self.viterbi:
            out["decoding"] = "iob2-viterbi"
        if self.tag_transitions is not None:
            out["transitions"] = self.tag_transitions.to_json()
        return out

    def check_labels(self, examples: list[TokenExample], label_map: dict[str, str], split: str) -> list[TokenExample]:
        problems, total = [], 0
        for ex in examples:
            ex.tags = [_map_tag(t, label_map) for t in ex.tags]
            for t in ex.tags:
                if t not in self.index:
                    total += 1
                    if len(problems) < 10:
                        problems.append(f"{ex.source}: tag {t!r} of the {split} set does not occur in train; "
                                        "add train examples with that entity type or map it with data.label_map")
        if total:
            raise DataError(problems, total)
        return examples

    # -- sub-word pieces and documents -----------------------------------------------------
    def _pieces(self, examples: list[TokenExample]) -> list[list[list[int]]]:
        """Per example, per word: its sub-word token ids (a word the tokenizer drops becomes [UNK]).

        SentencePiece tokenizers (XLM-R, me5-small) mark a word start with "▁"; a word given on its
        own whose first piece is that bare marker (every Chinese character and most punctuation:
        "高" -> "▁", "高") loses it, as in the running text: otherwise every character's labelled
        first token would be the same "▁" and the sequences twice as long."""
        enc = self.tokenizer([ex.words for ex in examples], is_split_into_words=True, add_special_tokens=False)
        unk, marker = self.tokenizer.unk_token_id, _bare_marker(self.tokenizer)
        unmarked = self._unmarked_cjk() if marker is not None and self.inner_cjk_pieces else {}
        out = []
        for i, ex in enumerate(examples):
            words: list[list[int]] = [[] for _ in ex.words]
            for tok, w in zip(enc["input_ids"][i], enc.word_ids(i)):
                if w is not None:
                    words[w].append(tok)
            out.append([_word_pieces(w, marker, unmarked) or [unk] for w in words])
        return out

    def _unmarked_cjk(self) -> dict[int, int]:
        """Word-start pieces of one CJK character ("▁我") -> the same character's inner piece ("我"),
        where the vocabulary has both: a character given on its own comes out as "▁我" for frequent
        characters and as "▁", "们" for the others; in running Chinese text (no spaces) the model
        saw the inner pieces. Built once per task."""
        if self._unmarked is None:
            vocab = self.tokenizer.get_vocab()
            self._unmarked = {i: vocab[piece[1:]] for piece, i in vocab.items()
                              if len(piece) == 2 and piece[0] == "\u2581" and CJK_CHAR.fullmatch(piece[1]) and piece[1:] in vocab}
        return self._unmarked

    def _documents(self, examples: list[TokenExample]) -> list[list[int]]:
        if not self.document_context:
            return [[i] for i in range(len(examples))]
        docs: list[list[int]] = []
        for i, ex in enumerate(examples):
            if docs and examples[docs[-1][-1]].doc_id == ex.doc_id:
                docs[-1].append(i)
            else:
                docs.append([i])
        return docs

    def _feature(self, words: list[list[int]], labels: list[int] | None) -> Feature:
        ids, targets = [self.tokenizer.cls_token_id], [IGNORE]
        for k, piece in enumerate(words):
            piece = piece[: self.window - (len(ids) - 1)]
            if not piece:
                break
            ids.extend(piece)
            if labels is not None:  # label the first sub-word; the rest are ignored by the loss
                targets.extend([labels[k]] + [IGNORE] * (len(piece) - 1))
        ids.append(self.tokenizer.sep_token_id)
        feature: Feature = {"input_ids": ids}
        if labels is not None:
            feature["labels"] = targets + [IGNORE]
        return feature

    # -- encoding --------------------------------------------------------------------------
    def examples_from_texts(self, texts) -> list[TokenExample]:
        from ..data.words import words_of

        return [words_of(self.tokenizer, t if isinstance(t, str) else t[0], doc_id=i) for i, t in enumerate(texts)]

    def encode_for_training(self, examples: list[TokenExample]) -> list[Feature]:
        pieces = self._pieces(examples)
        features = []
        for doc in self._documents(examples):
            sent_lens = [sum(len(p) for p in pieces[i]) for i in doc]
            for pack in pack_sentences(sent_lens, self.window):
                words = [p for j in pack for p in pieces[doc[j]]]
                tags = [self.index[t] for j in pack for t in examples[doc[j]].tags]
                for s, e in word_windows([len(p) for p in words], self.window, self.window):
                    features.append(self._feature(words[s:e], tags[s:e]))
        return features

    def encode_for_inference(self, examples: list[TokenExample]) -> tuple[list[Feature], list[DocPlan]]:
        pieces = self._pieces(examples)
        features: list[Feature] = []
        plans = []
        for doc in self._documents(examples):
            members = [(i, w) for i in doc for w in range(len(examples[i].words))]
            if not members:
                continue
            words = [pieces[i][w] for i, w in members]
            word_lens = [len(p) for p in words]
            stride = self.window if sum(word_lens) <= self.window else self.window // 2
            spans = word_windows(word_lens, self.window, stride)
            ids = []
            for s, e in spans:
                ids.append(len(features))
                features.append(self._feature(words[s:e], None))
            plans.append(DocPlan(members, word_lens, spans, ids, best_window_per_word(word_lens, spans)))
        return features, plans

    def loss_units(self, feature: Feature) -> int:
        return sum(1 for t in feature["labels"] if t != IGNORE)

    def loss_sum(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:

        import torch.nn.functional as F

        logits = logits.float()  # [B, L, C]
        return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE, reduction="sum")

    # -- decoding --------------------------------------------------------------------------
    def decode(self, examples: list[TokenExample], plans: list[DocPlan], outputs: list[np.ndarray]) -> list[dict]:
        return self.predictions(examples, self.word_log_probs(examples, plans, outputs))

    def predictions(self, examples: list[TokenExample], word_logp: list[np.ndarray]) -> list[dict]:
        """`decode` from `word_log_probs` already computed (`tags`: their "tags" alone)."""
        return [self._prediction(ex, ids, logp) for ex, ids, logp in zip(examples, self._tag_paths(word_logp), word_logp)]

    def tags(self, word_logp: list[np.ndarray]) -> list[list[str]]:
        return [repair_iob2([self.labels[i] for i in ids]) for ids in self._tag_paths(word_logp)]

    def word_log_probs(self, examples: list[TokenExample], plans: list[DocPlan], outputs: list[np.ndarray]) -> list[np.ndarray]:
        """Per sentence [words, C]: each word's tag log-probabilities at its first piece, in the window that sees it best."""
        cut = np.full(len(self.labels), -np.inf)
        cut[self.index["O"]] = 0.0  # a word cut off at the window's end (only inside a huge word): O
        word_logp: list[np.ndarray] = [np.tile(cut, (len(ex.words), 1)) for ex in examples]
        for plan in plans:  # a document's windows are its own: their log-softmax is computed once, kept per document
            logp_of: dict[int, np.ndarray] = {}  # feature -> log-softmax of its logits [L, C]
            cum = [0, *accumulate(plan.word_lens)]
            for flat, (i, w) in enumerate(plan.members):
                win = plan.best[flat]
                f = plan.features[win]
                if f not in logp_of:
                    z = outputs[f].astype(np.float64) - outputs[f].max(axis=-1, keepdims=True)
                    logp_of[f] = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
                pos = 1 + cum[flat] - cum[plan.spans[win][0]]
                if pos < len(logp_of[f]) - 1:
                    word_logp[i][w] = logp_of[f][pos]
        return word_logp

    def _tag_paths(self, word_logp: list[np.ndarray]) -> list[list[int]]:
        """Tag ids per sentence: the best valid IOB2 path, or each word's argmax (runs saved before; repaired later)."""
        if not self.viterbi:
            return [[int(k) for k in np.argmax(logp, axis=1)] for logp in word_logp]
        return best_valid_paths(word_logp, *self.transitions, self.tag_transitions and self.tag_transitions.scores())

    def _prediction(self, ex: TokenExample, ids: list[int], logp: np.ndarray) -> dict:
        word_scores = np.exp(logp[np.arange(len(ids)), ids]) if ids else np.zeros(0)  # the chosen tag's probability
        tags = repair_iob2([self.labels[i] for i in ids])
        text, offsets = (ex.text, ex.offsets) if ex.text is not None and ex.offsets is not None else join_words(ex.words)
        entities = []
        for etype, s, e in tags_to_spans(tags):
            start, end = offsets[s][0], offsets[e - 1][1]
            entities.append({"type": etype, "text": text[start:end], "start": start, "end": end,
                             "score": round(float(np.mean(word_scores[s:e])), 6)})
        return {"tags": tags, "entities": entities, "word_scores": [round(float(s), 6) for s in word_scores]}

    def metrics(self, examples: list[TokenExample], predictions: list[dict]) -> dict:
        from ..evaluation.ner_metrics import entity_report

        return entity_report([ex.tags for ex in examples], [p["tags"] for p in predictions])

    answer_unit = "word tags"

    def response(self, prediction: dict) -> dict:
        return {"entities": prediction["entities"]}  # the per-word tags and scores are an internal detail

    # -- active learning (lmforge suggest) ----------------------------------------------------
    suggest_strategies = ("mnlp",)

    def informativeness(self, prediction: dict, strategy: str) -> tuple[float, str]:
        from ..active.scoring import mnlp

        scores = prediction["word_scores"]
        if not scores:
            return 0.0, "no words"
        return mnlp(scores), (f"mnlp: mean tag probability {float(np.exp(-mnlp(scores))):.2f} over {len(scores)} words, "
                              f"lowest {min(scores):.2f}")

    def suggestion(self, example: TokenExample, prediction: dict | None, data) -> dict:
        """A record the JSONL reader accepts: the words and their IOB2 tags (predicted, to confirm or
        correct; all O without a model)."""
        tags = prediction["tags"] if prediction is not None else ["O"] * len(example.words)
        return {"tokens": list(example.words), "tags": list(tags)}

    def answers(self, prediction: dict) -> list:
        return list(prediction["tags"])

    def headline(self, report: dict) -> dict[str, float]:
        return {"f1": report["f1"], "precision": report["precision"], "recall": report["recall"]}


def _word_pieces(pieces: list[int], marker: int | None, unmarked: dict[int, int]) -> list[int]:
    """A word's pieces as the model reads them: without a leading bare marker ("▁", "们" -> "们"), and a
    lone word-start CJK piece as its inner piece ("▁我" -> "我")."""
    if len(pieces) > 1 and pieces[0] == marker:
        return pieces[1:]
    if len(pieces) == 1:
        return [unmarked.get(pieces[0], pieces[0])]
    return pieces


def _bare_marker(tokenizer) -> int | None:
    """The id of the lone SentencePiece word-start piece "▁", if the vocabulary has one."""
    marker = tokenizer.convert_tokens_to_ids("\u2581")
    return None if marker is None or marker == tokenizer.unk_token_id else marker


def join_words(words: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Text and character offsets for pre-tokenized words, joined by single spaces."""
    offsets, pos = [], 0
    for w in words:
        offsets.append((pos, pos + len(w)))
        pos += len(w) + 1
    return " ".join(words), offsets


def _map_tag(tag: str, label_map: dict[str, str]) -> str:
    if tag == "O" or not label_map:
        return tag
    prefix, etype = tag[:2], tag[2:]
    return prefix + label_map.get(etype, etype)


NER_REPORT = ReportStyle(
    kind="token-classification",
    headlines=(("Entity precision (micro)", ("precision",)), ("Entity recall (micro)", ("recall",)),
               ("Entity F1 (micro)", ("f1",)), ("Entity macro F1", ("macro", "f1")), ("Token accuracy", ("token_accuracy",))),
    per_heading="Per entity type", per_column="Type", per_key="per_type",
    per_empty="No entities in the references or predictions.", count_key="num_sentences", unit="sentences",
    entity_plot=True)


class TokenClassificationSpec(TaskSpec):
    name = "token-classification"
    summary = "named entities: one IOB tag per word (CoNLL column files or JSON Lines)"
    auto_class = "AutoModelForTokenClassification"
    pipeline_tag = "token-classification"
    peft_task_type = "TOKEN_CLS"
    data_keys = ("scheme", "lenient_tags", "segment_positions", "document_context")
    holdout_by_document = True  # no document is split across train and dev
    # README: 16 packed sequences at 2e-4 are as accurate as 8 at 1e-4 (CoNLL-2003, me5 Resume) at 1.2x the tokens/s
    default_batch_size = 16  # (16 at 1e-4 lost 6.9 F1)
    learning_rates = {**DEFAULT_LEARNING_RATES, "full": 2e-4}
    # large sets: no hidden dropout (CoNLL-2003 test F1 84.96 vs 84.40 1 epoch, 87.87 vs 88.09 3, 1.18x the tokens/s;
    # Weibo, Resume keep it), batches of 14 x 128 = 1,792 padded tokens (no step of 16 short documents; 1.07-1.15x)
    large_set_hidden_dropout, large_set_token_batch_rows = 0.0, 14
    default_train_file = "data/train.conll"
    overflow = "longer sentences are split across windows, whose parts do not see each other"

    def check_config(self, cfg) -> list[str]:
        return refuse_keys(cfg, self.name, ("multi_label", "text_pair_field", "labels"))

    def dev_metrics(self, cfg) -> tuple[str, ...]:
        return ("f1", "precision", "recall")

    def read(self, cfg, path, *, scheme=None, require_labels=True):
        from ..data.ner_readers import read_ner

        if cfg.data.format in ("csv", "tsv"):
            raise UserError(f"data.format: {cfg.data.format} is not a NER format; use conll (column files) or jsonl")
        return read_ner(path, format=cfg.data.format, scheme=scheme or cfg.data.scheme, lenient=cfg.data.lenient_tags,
                        positions=cfg.data.segment_positions)

    def starter_data(self, train, flags):
        if train is None:
            return {}, []
        from ..data.infer import infer_ner_scheme

        if not train.is_file():
            raise UserError(f"--train: file not found: {train}")
        return infer_ner_scheme(train)

    def for_training(self, cfg, tokenizer, splits) -> TokenClassificationTask:
        labels = TokenClassificationTask.discover_labels(splits.train)
        if len(labels) < 3:
            raise UserError(f"{cfg.data.train}: found labels {labels}; training needs at least two different labels (entity types for NER)")
        return TokenClassificationTask(labels, tokenizer, cfg.data.max_length, cfg.data.document_context,
                                       tag_transitions=TagTransitions.from_training((ex.tags for ex in splits.train), labels))

    def for_run(self, cfg, labels, tokenizer, *, threshold=None) -> TokenClassificationTask:
        if threshold is not None:
            raise UserError(f"threshold={threshold}: a decision threshold applies to multi-label runs only; "
                            "this run tags entities; leave the threshold out")
        return TokenClassificationTask(labels["labels"], tokenizer, cfg.data.max_length, labels.get("document_context", True),
                                       inner_cjk_pieces=labels.get("cjk_pieces") == "inner",
                                       viterbi=labels.get("decoding") == "iob2-viterbi",
                                       tag_transitions=TagTransitions.from_json(labels.get("transitions")))

    def report_style(self, cfg) -> ReportStyle:
        return NER_REPORT

    def usage_code(self, cfg) -> list[str]:
        return ['inputs = tokenizer("Alice visited Paris", return_tensors="pt")',
                "with torch.no_grad():", "    tags = model(**inputs).logits.argmax(-1)[0]",
                "# one IOB2 tag per sub-word; lmforge reads the first sub-word of each word and takes the",
                "# most probable valid IOB2 path over those words (lmforge.tasks.iob_viterbi.best_valid_path),",
                "# scored with the training tag bigrams in labels.json (\"transitions\") times their weight"]

    def input_lengths(self, examples: list, tokenizer) -> list[int]:  # each sentence alone as training encodes it, + [CLS], [SEP]
        return [sum(map(len, words)) + 2 for words in TokenClassificationTask(["O"], tokenizer, 512)._pieces(examples)]

    def input_limit_note(self, max_length: int) -> str:
        return f"Inputs longer than {max_length} sub-word tokens are covered by sliding windows."


register(TokenClassificationSpec())
