"""The model registry on a real SQLite database in tmp_path: versions, stage changes, rollback stack,
lineage, diff, history, concurrent processes and crash safety of add.

Provenance: all fixture data is synthetic, written by these fixtures; no external files."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import sqlite3
import stat
from pathlib import Path

import pytest

from lmforge.errors import UserError
from lmforge.lifecycle import STAGES, Registry, Version, parse_ref
from lmforge.lifecycle.predlog import PredictionLog, predictions_since

CTX = multiprocessing.get_context("fork")


def make_run(folder: Path, *, dev_f1: float = 0.88, seed: int = 0) -> Path:
    """A finished run folder as `lmforge train` leaves it (tiny fake weights)."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("name: x\ntask: text-classification\n")
    (folder / "labels.json").write_text(json.dumps({"task": "text-classification", "labels": ["neg", "pos"]}))
    (folder / "run.json").write_text(json.dumps({"status": "complete"}))
    (folder / "metrics.json").write_text(json.dumps({
        "dev": {"accuracy": 0.9, "macro_f1": dev_f1, "labels": ["neg", "pos"]},
        "test": {"accuracy": 0.85, "macro_f1": 0.84, "per_label": {"pos": {"f1": 0.8}}},
        "training": {"steps": 10, "converged": True}}))
    (folder / "model").mkdir()
    (folder / "model" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "model" / "model.safetensors").write_bytes(random.Random(seed).randbytes(4096))
    (folder / "model" / "vocab.txt").write_text("[PAD]\n[UNK]\nthe\n")
    for skipped in ("checkpoints/step-5", "logs", "eval/dev"):
        (folder / skipped).mkdir(parents=True)
    (folder / "checkpoints" / "step-5" / "state.bin").write_bytes(b"x" * 100)
    (folder / "logs" / "metrics.jsonl").write_text("{}\n")
    (folder / "eval" / "dev" / "report.json").write_text("{}")
    return folder


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "runs" / "r1")


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


FAILED_GATE = {"passed": False, "parent": 1, "min_delta": -0.01,
               "checks": [{"name": "dev macro_f1 within 1 point of v1", "passed": False, "detail": "0.80 < 0.87"},
                          {"name": "new labels learned", "passed": True, "detail": "f1 0.9"}]}


def staging_dirs(reg: Registry) -> list[Path]:
    return list(reg.artefacts.glob(".staging-*"))


# -- add, list, get ------------------------------------------------------------------------------------


def test_add_copies_run_read_only_and_hashes(reg: Registry, run_dir: Path):
    v1 = reg.add("intents", run_dir, info={"data": {"train": "abc"}})
    assert isinstance(v1, Version)
    assert (v1.name, v1.version, v1.stage, v1.parent, v1.ref) == ("intents", 1, "candidate", None, "intents:v1")
    assert v1.path == reg.root / "artefacts" / "intents" / "v1" and v1.run_dir == v1.path / "run"
    assert (v1.run_dir / "model" / "model.safetensors").read_bytes() == (run_dir / "model" / "model.safetensors").read_bytes()
    for skipped in ("checkpoints", "logs", "eval"):
        assert not (v1.run_dir / skipped).exists()
    files = [p for p in v1.path.rglob("*") if p.is_file()]
    assert files and all(not p.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) for p in files)
    assert v1.config == {"name": "x", "task": "text-classification"}
    assert v1.metrics["dev"]["macro_f1"] == 0.88
    assert v1.info["data"] == {"train": "abc"} and v1.info["source_run"] == str(run_dir.absolute())
    assert len(v1.content_hash) == 64 and reg.verify("intents", 1)
    assert v1.created_at.endswith("+00:00")

    v2 = reg.add("intents", make_run(run_dir.parent / "r2", dev_f1=0.9, seed=1), parent=1)
    assert (v2.version, v2.parent) == (2, 1) and v2.content_hash != v1.content_hash
    assert staging_dirs(reg) == []

    tampered = v2.run_dir / "model" / "model.safetensors"
    tampered.chmod(0o644)
    tampered.write_bytes(b"tampered")
    assert not reg.verify("intents", 2) and reg.verify("intents", 1)


def test_add_with_prepare_writes_extras_into_the_version(reg: Registry, run_dir: Path):
    def prepare(folder: Path) -> dict:
        assert (folder / "run" / "model" / "config.json").is_file()
        (folder / "data").mkdir()
        (folder / "data" / "replay.jsonl").write_text('{"text": "hi", "label": "pos"}\n')
        (folder / "reference.json").write_text("{}")
        return {"replay": 1}

    v = reg.add("intents", run_dir, prepare=prepare)
    assert (v.path / "data" / "replay.jsonl").is_file() and (v.path / "reference.json").is_file()
    assert v.info["replay"] == 1 and reg.verify("intents", 1)


def test_add_refuses_bad_input_and_leaves_nothing(reg: Registry, run_dir: Path, tmp_path: Path):
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "config.yaml").write_text("name: x\n")
    with pytest.raises(UserError, match="not an lmforge run folder"):
        reg.add("intents", incomplete)
    for name in ("-bad", "a/b", "", "x y"):
        with pytest.raises(UserError, match="bad model name"):
            reg.add(name, run_dir)
    with pytest.raises(UserError, match="parent version 7"):
        reg.add("intents", run_dir, parent=7)

    def failing(folder: Path) -> None:
        raise RuntimeError("prepare broke")

    with pytest.raises(RuntimeError):
        reg.add("intents", run_dir, prepare=failing)
    assert reg.list() == [] and staging_dirs(reg) == []
    assert not (reg.artefacts / "intents" / "v1").exists()
    assert reg.add("intents", run_dir).version == 1


def test_list_names_get_production(reg: Registry, run_dir: Path):
    reg.add("b-model", run_dir)
    reg.add("a-model", run_dir)
    reg.add("a-model", run_dir, parent=1)
    assert [v.ref for v in reg.list()] == ["a-model:v1", "a-model:v2", "b-model:v1"]
    assert [v.version for v in reg.list("a-model")] == [1, 2] and reg.list("nope") == []
    assert reg.names() == ["a-model", "b-model"]
    assert reg.production("a-model") is None
    with pytest.raises(UserError, match="no production version"):
        reg.get("a-model")
    with pytest.raises(UserError, match=r"no version 9 \(it has v1, v2\)"):
        reg.get("a-model", 9)
    with pytest.raises(UserError, match="no registered model named 'zzz'.*a-model, b-model"):
        reg.get("zzz", 1)
    reg.promote("a-model", 2)
    assert reg.get("a-model").version == 2 and reg.production("a-model").version == 2
    assert reg.get("a-model", 1).stage == "candidate"


def test_default_root_from_environment(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("LMFORGE_REGISTRY", str(tmp_path / "env-reg"))
    assert Registry().root == tmp_path / "env-reg" and (tmp_path / "env-reg" / "registry.db").is_file()
    monkeypatch.delenv("LMFORGE_REGISTRY")
    monkeypatch.chdir(tmp_path)
    reg = Registry()
    assert reg.root == tmp_path / "registry" and reg.db_path == tmp_path / "registry" / "registry.db"
    assert (reg.root / "artefacts").is_dir()


def test_connect_settings_and_one_production_index(reg: Registry, run_dir: Path):
    conn = reg.connect()
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        reg.add("m", run_dir)
        reg.add("m", run_dir)
        conn.execute("UPDATE versions SET stage = 'production' WHERE name = 'm' AND version = 1")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE versions SET stage = 'production' WHERE name = 'm' AND version = 2")
    finally:
        conn.close()


# -- stage changes -------------------------------------------------------------------------------------


def add_versions(reg: Registry, run_dir: Path, n: int, name: str = "m", **kwargs) -> list[Version]:
    return [reg.add(name, run_dir, **kwargs) for _ in range(n)]


def test_promote_and_archive_transitions(reg: Registry, run_dir: Path):
    add_versions(reg, run_dir, 3)
    v1 = reg.promote("m", 1, actor="alice@host")
    assert v1.stage == "production" and v1.promoted_by == "alice@host" and v1.promoted_at and not v1.forced
    with pytest.raises(UserError, match="already in production"):
        reg.promote("m", 1)
    with pytest.raises(UserError, match=r"no version 5 \(it has v1, v2, v3\)"):
        reg.promote("m", 5)
    v2 = reg.promote("m", 2)
    assert v2.stage == "production" and reg.get("m", 1).stage == "archived"
    with pytest.raises(UserError, match="roll back or promote another version first"):
        reg.archive("m", 2)
    assert reg.archive("m", 3).stage == "archived"
    with pytest.raises(UserError, match="already archived"):
        reg.archive("m", 3)
    assert reg.promote("m", 3).stage == "production"  # archived versions can be promoted again
    assert [v.stage for v in reg.list("m")] == ["archived", "archived", "production"]
    assert STAGES == ("candidate", "production", "archived")


def test_promote_refuses_failed_gate_unless_forced(reg: Registry, run_dir: Path):
    reg.add("m", run_dir, gate={"passed": True, "checks": []})
    reg.add("m", run_dir, parent=1, gate=FAILED_GATE)
    reg.promote("m", 1)
    with pytest.raises(UserError) as info:
        reg.promote("m", 2)
    message = str(info.value)
    assert "dev macro_f1 within 1 point of v1" in message and "0.80 < 0.87" in message
    assert "new labels learned" not in message and "use --force to promote anyway" in message
    assert reg.production("m").version == 1
    forced = reg.promote("m", 2, force=True)
    assert forced.forced and forced.stage == "production" and forced.gate["passed"] is False
    assert reg.history("m")[-1]["note"].endswith("forced despite failed gate")
    assert not reg.get("m", 1).forced


def test_rollback_single_double_and_nothing_to_roll_back_to(reg: Registry, run_dir: Path):
    add_versions(reg, run_dir, 3)
    with pytest.raises(UserError, match="nothing to roll back to"):
        reg.rollback("m")
    reg.promote("m", 1)
    with pytest.raises(UserError, match="nothing to roll back to"):
        reg.rollback("m")
    reg.promote("m", 2)
    reg.promote("m", 3)
    back = reg.rollback("m")
    assert back.version == 2 and back.stage == "production"
    assert reg.get("m", 3).stage == "archived"
    assert reg.rollback("m").version == 1  # two rollbacks go back two promotions
    assert [v.stage for v in reg.list("m")] == ["production", "archived", "archived"]
    with pytest.raises(UserError, match="nothing to roll back to"):
        reg.rollback("m")
    reg.promote("m", 3)
    assert reg.rollback("m").version == 1


def test_lineage_diff_history(reg: Registry, run_dir: Path):
    reg.add("m", run_dir)
    reg.add("m", make_run(run_dir.parent / "r2", dev_f1=0.9), parent=1, gate={"passed": True, "delta": 0.02, "checks": []})
    reg.add("m", run_dir, parent=2)
    reg.add("m", run_dir)
    assert [v.version for v in reg.lineage("m", 3)] == [3, 2, 1]
    assert [v.version for v in reg.lineage("m", 4)] == [4]

    rows = {r["metric"]: r for r in reg.diff("m", 1, 2)}
    assert rows["dev.macro_f1"]["a"] == 0.88 and rows["dev.macro_f1"]["b"] == 0.9
    assert rows["dev.macro_f1"]["delta"] == pytest.approx(0.02)
    assert rows["test.per_label.pos.f1"]["delta"] == 0.0 and rows["training.steps"]["a"] == 10.0
    assert rows["gate.delta"] == {"metric": "gate.delta", "a": None, "b": 0.02, "delta": None}
    assert "training.converged" not in rows and "dev.labels" not in rows and "gate.passed" not in rows
    assert set(rows["dev.accuracy"]) == {"metric", "a", "b", "delta"}

    reg.promote("m", 1, actor="a@h")
    reg.promote("m", 2, actor="b@h")
    reg.archive("m", 4, actor="c@h")
    reg.rollback("m", actor="d@h")
    events = reg.history("m")
    assert [(e["action"], e["version"], e["from_stage"], e["to_stage"]) for e in events] == [
        ("add", 1, None, "candidate"), ("add", 2, None, "candidate"), ("add", 3, None, "candidate"),
        ("add", 4, None, "candidate"), ("promote", 1, "candidate", "production"),
        ("promote", 2, "candidate", "production"), ("archive", 4, "candidate", "archived"),
        ("rollback", 2, "production", "archived")]
    assert set(events[0]) == {"time", "action", "version", "from_stage", "to_stage", "actor", "note"}
    assert [e["actor"] for e in events[4:]] == ["a@h", "b@h", "c@h", "d@h"]
    assert "v1" in events[5]["note"] and "v1" in events[-1]["note"]
    assert events[0]["actor"]  # the default actor is user@host
    assert reg.history("nope") == []


def test_production_marker_changes_on_every_stage_change(reg: Registry, run_dir: Path):
    add_versions(reg, run_dir, 3)
    markers = [reg.production_marker("m")]
    assert markers[0] == (None, 0)
    for change in (lambda: reg.promote("m", 1), lambda: reg.promote("m", 2), lambda: reg.archive("m", 3),
                   lambda: reg.rollback("m")):
        change()
        markers.append(reg.production_marker("m"))
    assert [m[0] for m in markers] == [None, 1, 2, 2, 1]
    assert len({m[1] for m in markers}) == len(markers)
    reg.add("m", run_dir)
    assert reg.production_marker("m") == markers[-1]  # an add does not change production
    assert reg.production_marker("other") == (None, 0)


def test_parse_ref():
    assert parse_ref("intents") == ("intents", None)
    assert parse_ref("intents:3") == ("intents", 3)
    assert parse_ref("intents:v3") == ("intents", 3)
    assert parse_ref("my.model_v2-x:v12") == ("my.model_v2-x", 12)
    for bad in ("", ":3", "intents:", "intents:x", "intents:v", "intents:0", "a:b:3", "-x", "in tents"):
        with pytest.raises(UserError, match="bad model reference"):
            parse_ref(bad)


# -- names and version numbers at the boundary --------------------------------------------------------


BAD_NAMES = ["", ".", "..", "/", "a/b", "../escape", "/etc/x", "a\0b", "a\nb", "intents\n", " intents", "intents ",
             "-x", ".hidden", "_x", "a:b", "in tents", "a\\b", "ünïcode", "模型", "\ud800", "a\udcff", "x" * 101,
             "x" * 300, "x" * 10_000, 3, None, b"intents"]
ENTRY_POINTS = {  # every Registry method that takes a model name, called with `name`
    "add": lambda reg, name, run: reg.add(name, run),
    "get": lambda reg, name, run: reg.get(name),
    "get_version": lambda reg, name, run: reg.get(name, 1),
    "list": lambda reg, name, run: reg.list(name),
    "production": lambda reg, name, run: reg.production(name),
    "production_marker": lambda reg, name, run: reg.production_marker(name),
    "lineage": lambda reg, name, run: reg.lineage(name, 1),
    "history": lambda reg, name, run: reg.history(name),
    "diff": lambda reg, name, run: reg.diff(name, 1, 2),
    "verify": lambda reg, name, run: reg.verify(name, 1),
    "promote": lambda reg, name, run: reg.promote(name, 1),
    "rollback": lambda reg, name, run: reg.rollback(name),
    "archive": lambda reg, name, run: reg.archive(name, 1),
}


def tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_entry_point_refuses_bad_names_with_a_user_error(reg: Registry, run_dir: Path, tmp_path: Path, entry):
    reg.add("intents", run_dir)
    before = tree(tmp_path) - {p for p in tree(tmp_path) if p.startswith("registry/registry.db")}
    for name in BAD_NAMES:
        if name is None and entry == "list":
            continue  # list(None) lists every model
        with pytest.raises(UserError, match="bad model name") as info:
            ENTRY_POINTS[entry](reg, name, run_dir)
        message = str(info.value)
        assert "1-100 characters" in message and len(message) < 400, message  # says what is allowed, stays short
        message.encode("utf-8")  # printable: no lone surrogates (they are escaped)
    after = tree(tmp_path) - {p for p in tree(tmp_path) if p.startswith("registry/registry.db")}
    assert after == before  # nothing written, inside the registry or outside it
    assert [v.ref for v in reg.list()] == ["intents:v1"] and reg.verify("intents", 1)


def test_a_300_character_name_is_a_user_error_not_an_os_error(reg: Registry, run_dir: Path):
    with pytest.raises(UserError, match=r"bad model name 'xxx.*\(300 characters\).*1-100 characters"):
        reg.add("x" * 300, run_dir)
    assert reg.list() == [] and staging_dirs(reg) == []


@pytest.mark.parametrize("name", ["intents", "clinc", "senti", "m", "a-model", "my.model_v2-x", "V2", "7b", "x" * 100])
def test_good_names_keep_working(reg: Registry, run_dir: Path, name):
    assert reg.add(name, run_dir).ref == f"{name}:v1"
    assert reg.promote(name, 1).stage == "production" and reg.get(name).version == 1


BAD_VERSIONS = [0, -1, -(10 ** 30), 10 ** 30, 2 ** 63, 2 ** 62 + 1, 10 ** 5000, True, 1.0, "1", None]
VERSION_ENTRY_POINTS = {
    "get": lambda reg, v: reg.get("m", v),
    "lineage": lambda reg, v: reg.lineage("m", v),
    "verify": lambda reg, v: reg.verify("m", v),
    "diff_a": lambda reg, v: reg.diff("m", v, 1),
    "diff_b": lambda reg, v: reg.diff("m", 1, v),
    "promote": lambda reg, v: reg.promote("m", v),
    "archive": lambda reg, v: reg.archive("m", v),
}


@pytest.mark.parametrize("entry", VERSION_ENTRY_POINTS)
def test_bad_version_numbers_are_user_errors(reg: Registry, run_dir: Path, entry):
    reg.add("m", run_dir)
    for version in BAD_VERSIONS:
        if version is None and entry == "get":
            continue  # get(name, None) means the production version
        with pytest.raises(UserError, match="bad version .*whole number from 1 to 2\\*\\*62") as info:
            VERSION_ENTRY_POINTS[entry](reg, version)
        assert len(str(info.value)) < 300
    assert reg.get("m", 1).stage == "candidate"  # nothing changed


def test_bad_parent_versions_are_user_errors(reg: Registry, run_dir: Path):
    reg.add("m", run_dir)
    for parent in (0, -3, 10 ** 30, True, "1"):
        with pytest.raises(UserError, match="bad parent version"):
            reg.add("m", run_dir, parent=parent)
    assert [v.version for v in reg.list("m")] == [1] and staging_dirs(reg) == []


def test_names_differing_only_in_case_are_refused(reg: Registry, run_dir: Path):
    """On a case-insensitive filesystem (macOS, Windows) they would share a folder, and the second add would
    take the first model's version folder for a leftover and delete it."""
    reg.add("intents", run_dir)
    with pytest.raises(UserError, match="'Intents'.*'intents'.*only in case"):
        reg.add("Intents", run_dir)
    assert reg.names() == ["intents"] and reg.verify("intents", 1)


def test_parse_ref_refuses_out_of_range_references():
    assert parse_ref("intents:v" + "9" * 18) == ("intents", 10 ** 18 - 1)
    for bad in ("intents:" + "9" * 30, "intents:v" + "9" * 5000, "intents:" + str(2 ** 62 + 1), "intents:\u0663",
                "intents\n:3", "x" * 101, "x" * 101 + ":1", "ünïcode:1", "a\0b"):
        with pytest.raises(UserError, match="bad model reference") as info:
            parse_ref(bad)
        assert len(str(info.value)) < 400


# -- concurrency ---------------------------------------------------------------------------------------


def _random_stage_changes(root: str, seed: int, results) -> None:
    reg = Registry(root)
    rng = random.Random(seed)
    done = 0
    for _ in range(20):
        try:
            if rng.random() < 0.6:
                reg.promote("m", rng.randint(1, 4), actor=f"worker{seed}")
            else:
                reg.rollback("m", actor=f"worker{seed}")
            done += 1
        except UserError:
            pass
    results.put(done)


def _concurrent_adds(root: str, run_dir: str, n: int, results) -> None:
    reg = Registry(root)
    results.put([reg.add("m", Path(run_dir)).version for _ in range(n)])


def _run_workers(target, args_list: list[tuple]) -> list:
    results = CTX.Queue()
    procs = [CTX.Process(target=target, args=(*args, results)) for args in args_list]
    for p in procs:
        p.start()
    out = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return out


def replayed_stack(reg: Registry, name: str) -> list[int]:
    stack: list[int] = []
    for event in reg.history(name):
        if event["action"] == "promote":
            stack.append(event["version"])
        elif event["action"] == "rollback":
            assert stack and event["version"] == stack[-1]
            stack.pop()
    return stack


def test_concurrent_promote_and_rollback_stay_consistent(reg: Registry, run_dir: Path):
    add_versions(reg, run_dir, 4)
    done = _run_workers(_random_stage_changes, [(str(reg.root), seed) for seed in range(4)])
    assert sum(done) > 0
    versions = reg.list("m")
    assert sum(v.stage == "production" for v in versions) == 1
    stack = replayed_stack(reg, "m")
    promoted = {e["version"] for e in reg.history("m") if e["action"] == "promote"}
    for v in versions:
        expected = "production" if v.version == stack[-1] else "archived" if v.version in promoted else "candidate"
        assert v.stage == expected, (v.ref, stack)
    assert len([e for e in reg.history("m") if e["action"] != "add"]) == sum(done)


def test_concurrent_adds_get_unique_versions_without_gaps(reg: Registry, run_dir: Path):
    results = _run_workers(_concurrent_adds, [(str(reg.root), str(run_dir), 3) for _ in range(4)])
    numbers = sorted(n for batch in results for n in batch)
    assert numbers == list(range(1, 13))
    assert [v.version for v in reg.list("m")] == numbers
    assert all(reg.verify("m", n) for n in (1, 6, 12))
    assert staging_dirs(reg) == []


def _open_new_database(root: str, index: int, barrier, results) -> None:
    """Half the workers open the registry, half the prediction log: the same new database, at once."""
    barrier.wait(timeout=30)
    if index % 2:
        Registry(root).names()
    else:
        log = PredictionLog(Path(root) / "registry.db", "m")
        log.start()
        log.record({"id": f"p{index}", "version": 1, "label": "pos", "confidence": 0.9})
        log.stop()
        assert log.dropped == 0
    results.put(index)


def test_registry_and_prediction_log_open_one_new_database_at_once(tmp_path: Path):
    """Both go through lifecycle.db, whose retry covers the lock that switching to WAL takes."""
    root = tmp_path / "shared"
    root.mkdir()
    barrier = CTX.Barrier(8)
    assert sorted(_run_workers(_open_new_database, [(str(root), i, barrier) for i in range(8)])) == list(range(8))
    reg = Registry(root)
    conn = reg.connect()
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()
    assert {"versions", "events", "predictions", "feedback"} <= tables
    assert len(predictions_since(reg.db_path, "m", 0.0)) == 4


# -- crash safety --------------------------------------------------------------------------------------


def _kill_self(folder: Path) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _add_killed_in_prepare(root: str, run_dir: str) -> None:
    Registry(root).add("m", Path(run_dir), prepare=_kill_self)


def _add_killed_before_commit(root: str, run_dir: str) -> None:
    insert = Registry._insert_version

    def insert_then_die(self, conn, *args, **kwargs):
        insert(self, conn, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)  # row inserted and folder renamed, but not committed

    Registry._insert_version = insert_then_die  # in the forked child only
    Registry(root).add("m", Path(run_dir))


def _run_killed(target, *args) -> None:
    proc = CTX.Process(target=target, args=args)
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == -signal.SIGKILL


def test_add_killed_inside_prepare_leaves_no_version(reg: Registry, run_dir: Path):
    _run_killed(_add_killed_in_prepare, str(reg.root), str(run_dir))
    assert len(staging_dirs(reg)) == 1  # the crash left its staging folder behind...
    assert reg.list() == [] and reg.names() == []
    v = reg.add("m", run_dir)  # ...which the next add removes
    assert v.version == 1 and reg.verify("m", 1)
    assert staging_dirs(reg) == [] and [x.version for x in reg.list()] == [1]


def test_add_killed_before_commit_leaves_no_version(reg: Registry, run_dir: Path):
    _run_killed(_add_killed_before_commit, str(reg.root), str(run_dir))
    assert (reg.artefacts / "m" / "v1").is_dir()  # renamed into place, but its row never committed
    assert reg.list() == [] and reg.history("m") == [] and reg.production_marker("m") == (None, 0)
    v = reg.add("m", run_dir, info={"attempt": 2})
    assert v.version == 1 and v.info["attempt"] == 2 and reg.verify("m", 1)
    assert staging_dirs(reg) == [] and [x.version for x in reg.list()] == [1]
