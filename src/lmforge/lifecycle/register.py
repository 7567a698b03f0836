"""Registering a run as a model version, with what the lifecycle needs later.

Besides the run itself, a version folder keeps:
    data/replay.jsonl     a label-balanced sample of the training data (what `update` replays)
    data/eval/<set>.jsonl  the evaluation sets the gate re-checks on every later update
    data/vocab.txt         the training vocabulary (monitoring's out-of-vocabulary rate)
    reference.json         the model's predictions on its evaluation sets: label counts, confidences,
                           lengths, OOV rates, accuracy (monitoring's "before"; see `reference`)
so that an update and the monitor never depend on files outside the registry. `update` reads the
replay data and evaluation sets back with `replay_pool_of` and `eval_sets_of`.
"""

from __future__ import annotations

from pathlib import Path

from ..data.load import load_splits
from ..data.types import TextExample
from ..errors import UserError
from ..runs import RunFolder
from ..tasks import get_task, task_names
from ..files import write_json_atomic, write_text_atomic
from .examples import balanced_sample, file_fingerprint, read_examples, vocabulary, write_examples
from .reference import REFERENCE_FILE, VOCAB_FILE, reference_stats

REPLAY_BUFFER = 5000     # training examples a version keeps for replay
REFERENCE_EXAMPLES = 5000  # evaluation examples whose predictions form the monitoring reference


def lifecycle_tasks() -> list[str]:
    return [name for name in task_names() if get_task(name).supports_lifecycle]


def supported(run_dir: Path) -> tuple[bool, str]:
    """Whether the lifecycle (update, monitor) supports a run, and why not."""
    run = RunFolder.open(run_dir, complete=False)
    cfg = run.config
    if not run.spec.supports_lifecycle:
        return False, f"the lifecycle supports {', '.join(lifecycle_tasks())} runs; {run_dir} is {cfg.task}"
    if cfg.data.multi_label:
        return False, "multi-label runs are not supported by the lifecycle yet"
    return True, ""


def register_run(registry, name: str, run_dir: Path, *, parent: int | None = None, gate: dict | None = None,
                 replay_pool: list[TextExample] | None = None, eval_sets: dict[str, list[TextExample]] | None = None,
                 vocab: set[str] | None = None, info: dict | None = None, actor: str | None = None):
    """Add `run_dir` to the registry as a candidate version of `name` (see the module docstring).

    Without `replay_pool` / `eval_sets` (a first version) they come from the run's own data files: its
    training data, and its dev and test sets."""
    run = RunFolder.open(run_dir)
    run_dir, cfg = run.path, run.config
    info = dict(info or {})
    if supported(run_dir)[0]:
        if replay_pool is None or eval_sets is None:
            own_pool, own_sets, fingerprints = _own_data(run_dir)
            replay_pool = own_pool if replay_pool is None else replay_pool
            eval_sets = own_sets if eval_sets is None else eval_sets
            info.setdefault("data", fingerprints)
        vocab = vocab if vocab is not None else vocabulary(replay_pool)
        seed = cfg.training.seed

        def prepare(folder: Path) -> dict:
            return _write_extras(folder, replay_pool, eval_sets, vocab, seed)
    else:
        prepare = None
    return registry.add(name, run_dir, parent=parent, gate=gate, info=info, prepare=prepare, actor=actor)


def _own_data(run_dir: Path) -> tuple[list[TextExample], dict[str, list[TextExample]], dict]:
    cfg = RunFolder(run_dir).config
    try:
        splits = load_splits(cfg, run_dir)
    except UserError as err:
        raise UserError(f"registering {run_dir} needs its training data (for replay and the gate's evaluation sets): "
                        f"{err}") from None
    sets = {"dev": splits.dev} if splits.dev else {}  # a few-shot run has no dev set
    if splits.test:
        sets["test"] = splits.test
    fingerprints = {split: file_fingerprint(Path(getattr(cfg.data, split))) for split in ("dev", "test")
                    if getattr(cfg.data, split) and Path(getattr(cfg.data, split)).is_file()}
    trained_on = [file_fingerprint(path) for path in cfg.train_paths(run_dir) if path.is_file()]
    if trained_on:
        fingerprints["train"] = trained_on[0] if isinstance(cfg.data.train, str) else trained_on
    return splits.train, sets, fingerprints


def _write_extras(folder: Path, pool: list[TextExample], eval_sets: dict[str, list[TextExample]], vocab: set[str],
                  seed: int) -> dict:
    from ..predictor import Predictor

    data = folder / "data"
    replay = balanced_sample(pool, REPLAY_BUFFER, seed)
    write_examples(data / "replay.jsonl", replay)
    for set_name, examples in eval_sets.items():
        write_examples(data / "eval" / f"{set_name}.jsonl", examples)
    write_text_atomic(folder / VOCAB_FILE, "".join(w + "\n" for w in sorted(vocab)))
    predictor = Predictor.from_run(folder / "run")
    examples = [ex for exs in eval_sets.values() for ex in exs][:REFERENCE_EXAMPLES]
    write_json_atomic(folder / REFERENCE_FILE, reference_stats(predictor, examples, vocab))
    return {"replay_examples": len(replay), "eval_sets": {k: len(v) for k, v in eval_sets.items()},
            "vocabulary": len(vocab)}


def eval_sets_of(version_path: Path) -> dict[str, list[TextExample]]:
    folder = Path(version_path) / "data" / "eval"
    return {p.stem: read_examples(p) for p in sorted(folder.glob("*.jsonl"))} if folder.is_dir() else {}


def replay_pool_of(version_path: Path) -> list[TextExample]:
    path = Path(version_path) / "data" / "replay.jsonl"
    return read_examples(path) if path.is_file() else []
