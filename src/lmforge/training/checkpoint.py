"""Resumable training state, written atomically.

A checkpoint is a folder `checkpoints/ckpt-<step>/` holding the trainable weights (safetensors), the
optimizer and scheduler state and the RNG states (tensors and plain values only, loaded with
`weights_only=True`), and `state.json` (the `TrainState`: step, data position, best metric). `checkpoints/latest.json`
names the newest complete checkpoint and is replaced atomically only after that folder is fully
written, so a kill at any moment (even -9) leaves a usable checkpoint behind.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..files import read_json, write_json_atomic
from .state import TrainState

LATEST = "latest.json"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise RuntimeError(f"checkpoint has parameters the model lacks: {missing[:3]}")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(root: Path, step: int, model, optimizer, scheduler, rng: list, state: TrainState, keep: int = 1) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"ckpt-{step:08d}"
    tmp = root / f".tmp-ckpt-{step:08d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng}, tmp / "state.pt")
    (tmp / "state.json").write_text(json.dumps(state.to_json(), indent=2))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    write_json_atomic(root / LATEST, {"checkpoint": final.name, "step": step})
    for old in sorted(root.glob("ckpt-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    prune_best(root, state.best_step)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / read_json(pointer)["checkpoint"]
    return path if (path / "state.json").is_file() else None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> tuple[TrainState, list]:
    """Restore weights, optimizer and scheduler in place; returns the state and each process's RNG state."""
    load_trainable_state(model, load_file(str(path / "trainable.safetensors")))
    state = torch.load(path / "state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return TrainState.from_json(json.loads((path / "state.json").read_text())), state["rng"]


def _best_path(root: Path, step: int) -> Path:
    return root / f"best-{step:08d}.safetensors"


def save_best(root: Path, model, step: int) -> None:
    """The best weights so far (by the dev metric). One file per step: the checkpoint written right
    after names the step it belongs with, so a kill in between leaves the previous best in force."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / ".best.safetensors.tmp"
    save_file(trainable_state(model), str(tmp))
    tmp.replace(_best_path(root, step))


def prune_best(root: Path, keep_step: int | None) -> None:
    for path in root.glob("best-*.safetensors"):
        if keep_step is None or path != _best_path(root, keep_step):
            path.unlink(missing_ok=True)


def _window_path(root: Path, step: int) -> Path:
    return root / f"avg-{step:08d}.safetensors"


def _window(root: Path) -> list[tuple[int, Path]]:
    return sorted((int(path.stem.split("-")[1]), path) for path in root.glob("avg-*.safetensors"))


def save_window(root: Path, model, step: int, size: int) -> None:
    """Weight averaging (`training.average_last`): the weights at this evaluation join the window of
    the last `size`; older ones, and any a killed run left from steps after this one, are removed."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / ".avg.safetensors.tmp"
    save_file(trainable_state(model), str(tmp))
    tmp.replace(_window_path(root, step))
    window = _window(root)
    stale = [path for s, path in window if s > step]
    older = [path for s, path in window if s <= step][:-size]
    for path in stale + older:
        path.unlink(missing_ok=True)


def load_average(root: Path, model, until: int, size: int) -> list[int]:
    """Load into `model` the mean of the weights of the last `size` evaluations up to step `until`;
    returns the steps averaged (none: the model is left as it is)."""
    window = [(s, path) for s, path in _window(root) if s <= until][-size:]
    if not window:
        return []
    total: dict[str, torch.Tensor] = {}
    for _, path in window:
        for name, value in load_file(str(path)).items():
            total[name] = total[name] + value.double() if name in total else value.double()
    load_trainable_state(model, {name: (value / len(window)).to(torch.float32) for name, value in total.items()})
    return [s for s, _ in window]


def load_best(root: Path, model, step: int | None) -> dict | None:
    if step is None or not _best_path(root, step).is_file():
        return None
    load_trainable_state(model, load_file(str(_best_path(root, step))))
    return {"step": step}
