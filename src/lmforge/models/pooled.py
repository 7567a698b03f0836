"""A sentence-embedding classifier: an encoder, mean pooling over the real tokens, L2 normalisation
and a linear head. The few-shot and zero-shot methods build it (training/sentence_methods.py).

It behaves like a transformers sequence classifier where lmforge uses one (`from_pretrained`,
`save_pretrained`, `model(**batch).logits`, `get_input_embeddings`, `config`), so evaluate, predict,
explain, serve, export and update run it unchanged. The saved folder is, without lmforge:
- a sentence-transformers model (modules.json, 1_Pooling/, 2_Normalize/ beside the encoder's own
  config.json and model.safetensors): `SentenceTransformer(folder).encode(texts)` gives the embeddings
  the head reads;
- the head in `classifier.safetensors` (weight [C, H], bias [C]) and its labels in `classifier.json`:
  `logits = embeddings @ weight.T + bias`. No pickles (SetFit saves a pickled scikit-learn head).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

HEAD_FILE = "classifier.safetensors"
HEAD_INFO = "classifier.json"
ST_MODULES = [  # sentence-transformers' module layout (modules.json): encoder, mean pooling, normalisation
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]
_LOAD_ONLY = ("num_labels", "id2label", "label2id", "problem_type", "ignore_mismatched_sizes")


def is_sentence_classifier(path: Path) -> bool:
    return (Path(path) / HEAD_INFO).is_file()


def head_labels(path: Path) -> list[str] | None:
    """The labels of a saved sentence classifier's head (None: not one)."""
    info = Path(path) / HEAD_INFO
    if not info.is_file():
        return None
    labels = json.loads(info.read_text(encoding="utf-8")).get("labels")
    return list(labels) if isinstance(labels, list) else None


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors where the mask is 1: [B, L, H], [B, L] -> [B, H]."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class SentenceClassifier(nn.Module):
    supports_gradient_checkpointing = True

    def __init__(self, body: nn.Module, num_labels: int):
        super().__init__()
        if getattr(body, "pooler", None) is not None:  # unused (mean pooling), kept so the saved encoder loads whole
            body.pooler.requires_grad_(False)
        self.body = body
        self.classifier = nn.Linear(body.config.hidden_size, num_labels)
        nn.init.normal_(self.classifier.weight, std=0.02)
        nn.init.zeros_(self.classifier.bias)

    @property
    def config(self):
        return self.body.config

    @property
    def num_labels(self) -> int:
        return self.classifier.out_features

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised mean-pooled sentence embeddings [B, H] (what sentence-transformers' encode returns)."""
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        return nn.functional.normalize(mean_pool(hidden.float(), attention_mask), dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, **_: Any):
        from transformers.modeling_outputs import SequenceClassifierOutput

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        emb = self.embed(input_ids, attention_mask, token_type_ids)
        return SequenceClassifierOutput(logits=self.classifier(emb.to(self.classifier.weight.dtype)))

    # -- the parts of transformers' model interface lmforge uses ------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.body.get_input_embeddings()

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        self.body.gradient_checkpointing_enable(**kwargs)

    def set_attn_implementation(self, implementation: str) -> None:
        self.body.set_attn_implementation(implementation)

    def set_labels(self, labels: list[str]) -> None:
        self.config.num_labels = len(labels)
        self.config.id2label = dict(enumerate(labels))
        self.config.label2id = {label: i for i, label in enumerate(labels)}

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> "SentenceClassifier":
        """The encoder from `path` (any transformers encoder folder) and, when `path` holds a saved
        head of the requested size, that head; otherwise a new head with `num_labels` rows."""
        from safetensors.torch import load_file
        from transformers import AutoModel

        wanted = {k: kwargs.pop(k) for k in _LOAD_ONLY if k in kwargs}
        body = AutoModel.from_pretrained(str(path), **kwargs)
        saved = head_labels(Path(path))
        labels = [wanted["id2label"][k] for k in sorted(wanted["id2label"], key=int)] if wanted.get("id2label") else saved
        if labels is None:
            raise ValueError(f"{path} holds no classifier head ({HEAD_INFO}) and no labels were given")
        model = cls(body, len(labels))
        model.set_labels(labels)
        if saved is not None and len(saved) == len(labels):
            state = load_file(str(Path(path) / HEAD_FILE))
            model.classifier.load_state_dict({"weight": state["weight"], "bias": state["bias"]})
        return model

    def save_pretrained(self, path: str | Path, **kwargs: Any) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        self.body.save_pretrained(str(path), **kwargs)
        head = {k: v.detach().float().contiguous().cpu() for k, v in self.classifier.state_dict().items()}
        save_file(head, str(path / HEAD_FILE), metadata={"format": "pt"})
        labels = [self.config.id2label[i] for i in range(self.num_labels)]
        info = {"labels": labels, "pooling": "mean", "normalize": True,
                "usage": "logits = SentenceTransformer(folder).encode(texts, convert_to_tensor=True) @ weight.T + bias"}
        (path / HEAD_INFO).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _write_sentence_transformers_files(path, self.config)


def usage_code(multi_label: bool) -> list[str]:
    """Model card: running a saved sentence classifier with sentence-transformers and safetensors alone."""
    decide = (["probs = logits.sigmoid()[0]  # multi-label: compare each with the run's threshold (labels.json)",
               "chosen = [labels[i] for i, p in enumerate(probs) if p >= THRESHOLD]"] if multi_label else
              ["probs = logits.softmax(-1)[0]", "label = labels[int(probs.argmax())]"])
    return ["import json", "from safetensors.torch import load_file", "from sentence_transformers import SentenceTransformer", "",
            'folder = "path/to/run/model"',
            "encoder = SentenceTransformer(folder, device=\"cpu\")  # the tuned encoder: mean pooling, normalised",
            f'head = load_file(f"{{folder}}/{HEAD_FILE}")',
            f'labels = json.load(open(f"{{folder}}/{HEAD_INFO}"))["labels"]',
            'embeddings = encoder.encode(["some text"], convert_to_tensor=True)',
            'logits = embeddings @ head["weight"].T + head["bias"]', *decide]


def _write_sentence_transformers_files(path: Path, config) -> None:
    hidden = config.hidden_size
    (path / "modules.json").write_text(json.dumps(ST_MODULES, indent=2) + "\n")
    longest = min(512, int(getattr(config, "max_position_embeddings", 512)))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": longest, "do_lower_case": False}) + "\n")
    pooling = path / "1_Pooling"
    pooling.mkdir(exist_ok=True)
    (pooling / "config.json").write_text(json.dumps({"word_embedding_dimension": hidden, "pooling_mode_cls_token": False,
                                                     "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
                                                     "pooling_mode_mean_sqrt_len_tokens": False}, indent=2) + "\n")
    (path / "2_Normalize").mkdir(exist_ok=True)
