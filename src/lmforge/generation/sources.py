"""Where a generation model comes from: a run folder, a packaged short name or a local Hugging Face
folder (`locate`), the version string its weights give it, and the repair of a damaged model cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import UserError


def locate(source: str | Path) -> tuple[Path, str, Path | None]:
    """(model folder, display name, unmerged adapter folder or None) for a run folder, a packaged
    short name or a local Hugging Face folder."""
    from ..models.resolve import PACKAGED_MODELS, resolve_model
    from ..runs import is_run_folder

    path = Path(source).expanduser()
    if is_run_folder(path):
        return _locate_run(path)
    folder = resolve_model(str(source))
    return folder, str(source) if str(source) in PACKAGED_MODELS else folder.name, None


def repaired_cache(source: str | Path) -> bool:
    """After a failed load of a converted packaged model: check its files' sha256 and convert it
    again if they differ (a cache damaged without changing sizes). True if it was converted again."""
    from ..models.cache import problems
    from ..models.resolve import PACKAGED_MODELS, resolve_model

    if str(source) not in PACKAGED_MODELS or not PACKAGED_MODELS[str(source)].format:
        return False
    folder = resolve_model(str(source))
    if not problems(folder, full=True):
        return False
    resolve_model(str(source), verify="full")
    return True


def _locate_run(run_dir: Path) -> tuple[Path, str, Path | None]:
    from ..runs import RunFolder

    run = RunFolder.open(run_dir)
    if not run.is_decoder:
        raise UserError(f"{run_dir} is a {run.config.task} run, not a generation run: use `lmforge predict {run_dir} FILE`")
    return run.model_dir, run.config.name, run.adapter_dir if run.uses_adapter else None


def weights_version(name: str, folder: Path) -> str:
    """`<name>-<first 12 hex digits of the weights' sha256>`: changes whenever the weights do (as
    the classification Predictor's). A converted packaged model has the digest in its manifest."""
    from ..models.cache import MANIFEST
    from ..files import read_json, update_digest

    weights = sorted(folder.glob("*.safetensors"))
    if len(weights) == 1 and (folder / MANIFEST).is_file():
        recorded = read_json(folder / MANIFEST)["files"].get(weights[0].name)
        if recorded is not None:
            return f"{name}-{recorded['sha256'][:12]}"
    digest = hashlib.sha256()
    for path in weights:
        update_digest(digest, path)
    return f"{name}-{digest.hexdigest()[:12]}"
