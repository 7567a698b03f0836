"""Fuzz: malformed data files (tests/malformed_files.py: wrong encodings, BOMs, NUL bytes, surrogates,
stray quotes, huge lines and numbers, deep nesting, missing/extra/duplicate columns, empty files,
CR-only line ends, bad tags, ...) through `lmforge init`, `validate` and `train --max-steps 1`, in
process, with the tiny models. Every command exits 0 or 2 — never 1, never a traceback — and a
failed `train` leaves no run folder. Examples are few and derandomized to keep this module under a
minute; bench/fuzz_files.py runs the same generators for longer."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import malformed_files as mf
from lmforge.config import config_from_dict
from lmforge.data.load import read_split
from lmforge.errors import UserError

FUZZ = dict(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
CASES = [(name, mf.KINDS_OF[name][i % len(mf.KINDS_OF[name])]) for i, name in enumerate(sorted(mf.DAMAGE))]


@pytest.fixture(scope="module")
def models(tiny_model: Path, tiny_decoder: Path) -> dict[str, Path]:
    return {kind: tiny_decoder if kind == "sft-jsonl" else tiny_model for kind in mf.KINDS}


def assert_no_bug(outcomes: list[mf.Outcome], case: str) -> None:
    for o in outcomes:
        assert not o.bug, f"{case}: `lmforge {o.command}` exited {o.code} (run folder left: {o.run_folder_left}):\n{o.stderr[-3000:]}"


@pytest.mark.parametrize(("damage", "kind"), CASES, ids=[f"{d}-{k}" for d, k in CASES])
def test_each_damage_is_read_or_refused_clearly(tmp_path: Path, models, damage: str, kind: str) -> None:
    """Every kind of damage once: `init` through the CLI, and the reader `validate` and `train` use."""
    content, _ = mf.malformed_file(random.Random(7), kind, [damage])
    path = tmp_path / f"train{mf.SUFFIX[kind]}"
    path.write_bytes(content)
    init = mf.run_cli("init", ["--task", mf.TASK[kind], "--train", str(path), "-o", str(tmp_path / "c.yaml")])
    assert_no_bug([init], f"{damage} in {kind}")
    cfg = config_from_dict({"task": mf.TASK[kind], "model": str(models[kind]), "data": {"train": str(path)}})
    try:
        read_split(cfg, path)
    except UserError as error:
        message = str(error)
        message.encode("utf-8")  # printable: no lone surrogate from the file leaks into it
        assert path.name in message, message


@settings(max_examples=12, **FUZZ)
@given(kind=st.sampled_from(mf.KINDS), seed=st.integers(0, 2**32 - 1))
def test_init_and_validate_exit_0_or_2(tmp_path_factory, models, kind: str, seed: int) -> None:
    content, damage = mf.malformed_file(random.Random(seed), kind)
    outcomes = mf.check_file(tmp_path_factory.mktemp("fuzz"), kind, content, models[kind])
    assert_no_bug(outcomes, f"{damage} in {kind} (seed {seed})")


@settings(max_examples=4, **FUZZ)
@given(kind=st.sampled_from(mf.KINDS), seed=st.integers(0, 2**32 - 1))
def test_train_exit_0_or_2_and_no_run_folder_after_a_failure(tmp_path_factory, models, kind: str, seed: int) -> None:
    content, damage = mf.malformed_file(random.Random(seed), kind)
    outcomes = mf.check_file(tmp_path_factory.mktemp("fuzz"), kind, content, models[kind], train=True)
    assert_no_bug(outcomes, f"{damage} in {kind} (seed {seed})")


@pytest.mark.parametrize(("damage", "code"), [(["crlf", "utf8-bom"], 0), (["lone-surrogate-text"], 2)])
def test_train_on_a_damaged_file(tmp_path: Path, models, damage: list[str], code: int) -> None:
    content, _ = mf.malformed_file(random.Random(1), "jsonl", damage)
    init, validate, train = mf.check_file(tmp_path, "jsonl", content, models["jsonl"], train=True)
    assert_no_bug([init, validate, train], f"{damage} in jsonl")
    assert (validate.code, train.code) == (code, code)
    assert (tmp_path / "runs" / "fuzz" / "model").is_dir() == (code == 0)


def test_the_harness_sees_a_bug(tmp_path: Path, models, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader that crashes must show up as exit 1 with a traceback, or this module proves nothing."""
    from lmforge.data import classification_readers

    def crash(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(classification_readers, "read_classification", crash)
    content, _ = mf.malformed_file(random.Random(0), "csv", [])
    (init, validate) = mf.check_file(tmp_path, "csv", content, models["csv"])
    assert init.code == 1 and init.bug and "Traceback" in init.stderr  # init reads the texts to size max_length
    assert validate.code == 1 and validate.bug and "Traceback" in validate.stderr
