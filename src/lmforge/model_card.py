"""The model card a run leaves in `model/README.md` (and `adapter/README.md` for peft methods): what
the model does, its labels, the data it saw (sha256 fingerprints), its measured figures, how to load
it with plain transformers, and its limitations. Also makes the adapter's record of its base model
portable: a packaged short name or a relative path, never this machine's site-packages path."""

from __future__ import annotations

import os
from pathlib import Path

from .files import read_json, sha256_file, write_json_atomic, write_text_atomic
from .runs import RunFolder
from .tasks import get_task



def finish_artefacts(run_dir: Path, cfg, model_path: Path, metrics: dict, info: dict, examples: dict[str, int]) -> None:
    """Write the model card(s) and make `adapter/adapter_config.json` portable. `examples`: split -> count."""
    run = RunFolder(run_dir)
    base = portable_base(cfg.model, model_path, run.adapter_dir)
    if (run.adapter_dir / "adapter_config.json").is_file():
        path = run.adapter_dir / "adapter_config.json"
        adapter = read_json(path)
        adapter["base_model_name_or_path"] = base
        write_json_atomic(path, adapter)
    card = render_card(run_dir, cfg, base, metrics, info, examples)
    write_text_atomic(run.model_dir / "README.md", card)
    if run.adapter_dir.is_dir():
        write_text_atomic(run.adapter_dir / "README.md", card)


def portable_base(model: str, model_path: Path, adapter_dir: Path) -> str:
    """The packaged short name (e.g. minilm-l6), or the base folder relative to the adapter folder."""
    from .models.resolve import PACKAGED_MODELS

    if model in PACKAGED_MODELS:
        return model
    return os.path.relpath(Path(model_path).resolve(), adapter_dir.resolve())


def fingerprint(path: Path) -> dict:
    digest, size = sha256_file(path)
    return {"file": Path(path).name, "sha256": digest, "bytes": size}


def render_card(run_dir: Path, cfg, base: str, metrics: dict, info: dict, examples: dict[str, int]) -> str:
    run = RunFolder(run_dir)
    labels = read_json(run.labels_path) if run.labels_path.is_file() else {}
    task = cfg.task + (" (multi-label)" if cfg.data.multi_label else "") + (" (text pairs)" if cfg.data.text_pair_field else "")
    lines = ["---", "library_name: transformers", f"pipeline_tag: {get_task(cfg.task).pipeline_tag}", "tags: [lmforge]", "---", "",
             f"# {cfg.name}", "",
             f"A {task} model fine-tuned with lmforge from `{base}` "
             f"({_method(cfg, info)}).", ""]
    if labels.get("labels"):
        shown = ", ".join(f"`{x}`" for x in labels["labels"][:50]) + (" ..." if len(labels["labels"]) > 50 else "")
        lines += ["## Labels", "", f"{len(labels['labels'])}: {shown}", ""]
        if labels.get("threshold") is not None:
            lines += [f"Multi-label decision threshold: {labels['threshold']:.4g} (a label is predicted when its sigmoid "
                      "probability reaches it; tuned on dev after training).", ""]
        if (labels.get("transitions") or {}).get("weight"):
            lines += [f"Tags are decoded as the best valid IOB2 path, scored with the training tag bigrams in the run folder's `labels.json` "
                      f"(`transitions`) at weight {labels['transitions']['weight']:g} (tuned on dev after training).", ""]
    lines += _data_section(cfg, examples) + _metrics_section(metrics) + _usage_section(cfg, info) + _limitations(cfg, info, examples)
    return "\n".join(lines) + "\n"


def _method(cfg, info: dict) -> str:
    if cfg.method == "full":
        return "full fine-tuning"
    merged = " merged into `model/`" if info.get("merged") else "; `model/` holds the base with the trained head"
    return f"{cfg.method} adapter in `adapter/`{merged}"


def _data_section(cfg, examples: dict[str, int]) -> list[str]:
    from .config import is_builtin_dataset

    rows = ["## Training data", "", "| split | examples | file | sha256 |", "| --- | --- | --- | --- |"]
    for split in ("train", "dev", "test"):
        value = getattr(cfg.data, split)
        if value is None and split == "dev" and examples.get("dev"):
            rows.append(f"| dev | {examples['dev']} | held out from train (seed {cfg.training.seed}) | |")
            continue
        if value is None:
            continue
        if is_builtin_dataset(value) or not Path(value).is_file():
            rows.append(f"| {split} | {examples.get(split, '')} | `{value}` | |")
            continue
        fp = fingerprint(Path(value))
        rows.append(f"| {split} | {examples.get(split, '')} | `{fp['file']}` ({fp['bytes']:,} bytes) | `{fp['sha256'][:16]}…` |")
    return rows + [""]


def _metrics_section(metrics: dict) -> list[str]:
    rows = ["## Evaluation", ""]
    splits = [s for s in ("dev", "test") if isinstance(metrics.get(s), dict)]
    if not splits:
        return rows + ["No held-out evaluation was run.", ""]
    rows += ["| split | " + " | ".join(metrics[splits[0]]) + " |", "| --- |" + " --- |" * len(metrics[splits[0]])]
    for split in splits:
        rows.append(f"| {split} | " + " | ".join(_fmt(v) for v in metrics[split].values()) + " |")
    return rows + ["", "Full reports: `eval/<split>/report.md` in the run folder.", ""]


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _usage_section(cfg, info: dict) -> list[str]:
    from .config import SENTENCE_METHODS

    spec = get_task(cfg.task)
    if cfg.method in SENTENCE_METHODS:
        from .models.pooled import usage_code

        code = ["```python", *usage_code(cfg.data.multi_label), "```", "",
                "With lmforge (the same inference path as its evaluation, server and explanations):", "", "```python"]
        return ["## How to use", ""] + code + spec.lmforge_usage() + ["```", ""]
    cls = spec.auto_class
    code = ["```python", "import torch", f"from transformers import AutoTokenizer, {cls}", "",
            'tokenizer = AutoTokenizer.from_pretrained("path/to/run/model")',
            f'model = {cls}.from_pretrained("path/to/run/model").eval()']
    if not info.get("merged") and cfg.method != "full":
        code += ["from peft import PeftModel", 'model = PeftModel.from_pretrained(model, "path/to/run/adapter")  # prefix tuning: needed']
    code += spec.usage_code(cfg)
    code += ["```", "", "With lmforge (the same inference path as its evaluation, server and explanations):", "", "```python"]
    code += spec.lmforge_usage()
    return ["## How to use", ""] + code + ["```", ""]


def _limitations(cfg, info: dict, examples: dict[str, int]) -> list[str]:
    notes = [f"Trained on {examples.get('train', 'an unknown number of')} examples; expect it to work on text like them "
             "and to degrade on other domains, styles and languages.",
             get_task(cfg.task).input_limit_note(cfg.data.max_length),
             "Scores are model probabilities, not guarantees; check the calibration (ECE, reliability plot) in the evaluation reports."]
    if cfg.model == "minilm-l6":
        notes.append("The base encoder (MiniLM-L6) has an uncased English vocabulary: capitalisation is lost and "
                     "most non-Latin scripts become unknown tokens.")
    notes += [f"Training warned: {w}" for w in (info.get("threshold") or {}).get("warnings", [])]
    truncated = (info.get("data") or {}).get("truncated_train")
    if truncated:
        notes.append(f"{truncated} training texts were truncated to {cfg.data.max_length} tokens.")
    return ["## Limitations", ""] + [f"- {n}" for n in notes] + [""]
