"""The CLI's contract with a user at the terminal, for every subcommand: a wrong option, a missing
argument or a bad value exits 2 with one line on stderr (and a "did you mean" hint where click has
one), never a traceback; `--version`; `monitor` exits 3 on warnings; library imports leave the
process environment alone. The cases are generated from the Typer app itself, so a new command or
option is covered without touching this file."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import typer.main

from conftest import jsonl, sentiment_rows
from lmforge import __version__
from lmforge.cli import app, main

NUMERIC = {"integer", "float"}


def _leaves(command=None, path=()):
    command = command or typer.main.get_command(app)
    if hasattr(command, "commands"):
        for name, sub in sorted(command.commands.items()):
            yield from _leaves(sub, (*path, name))
    else:
        yield path, command


LEAVES = dict(_leaves())


def _kind(param) -> str:
    annotation = param.type_descriptor.annotation
    inner = getattr(annotation, "__args__", (annotation,))
    for t in inner:
        if t is int:
            return "integer"
        if t is float:
            return "float"
    return "text"


def _filler(param) -> list[str]:
    """A harmless value for a required parameter, so that the case under test is the one that fails."""
    value = "1" if _kind(param) in NUMERIC else "x"
    return [value] if param.param_type_name == "argument" else [param.opts[-1], value]


def _required(command, but=None) -> list[str]:
    args, opts = [], []
    for p in command.params:
        if p.required and p is not but:
            (args if p.param_type_name == "argument" else opts).extend(_filler(p))
    return args + opts


def run(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_usage_error(code: int, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


# --- usage mistakes, generated from the app -----------------------------------------------------------

@pytest.mark.parametrize("path", sorted(LEAVES), ids=" ".join)
def test_unknown_option_exits_2_in_one_line(path, capsys):
    code, _, err = run([*path, *_required(LEAVES[path]), "--no-such-option"], capsys)
    assert_usage_error(code, err, "No such option: --no-such-option", f"lmforge {' '.join(path)} --help")


@pytest.mark.parametrize("path", sorted(p for p, c in LEAVES.items() if any(x.required for x in c.params)), ids=" ".join)
def test_missing_argument_exits_2_in_one_line(path, capsys):
    code, _, err = run(list(path), capsys)
    assert_usage_error(code, err, "Missing")


def _bad_values():
    for path, command in sorted(LEAVES.items()):
        for param in command.params:
            if _kind(param) not in NUMERIC:
                continue
            bad = ["abc", "1e999" if _kind(param) == "float" else "9" * 40]
            if getattr(param, "min", None) is not None:
                bad.append(str(param.min - 1))
            if _kind(param) == "float":
                bad.append("nan")
            for value in bad:
                yield pytest.param(path, param.name, value, id=f"{' '.join(path)} {param.name}={value}")


@pytest.mark.parametrize(("path", "name", "value"), list(_bad_values()))
def test_bad_numeric_value_exits_2_naming_the_parameter(path, name, value, capsys):
    command = LEAVES[path]
    param = next(p for p in command.params if p.name == name)
    given = [value] if param.param_type_name == "argument" else [param.opts[-1], value]
    if param.param_type_name == "argument":  # put it in its place among the positionals
        positionals = [p for p in command.params if p.param_type_name == "argument" and (p.required or p is param)]
        argv = [*path]
        for p in positionals:
            argv += given if p is param else _filler(p)
        argv += [x for p in command.params if p.required and p.param_type_name == "option" for x in _filler(p)]
    else:
        argv = [*path, *_required(command), *given]
    code, _, err = run(argv, capsys)
    shown = param.opts[-1] if param.param_type_name == "option" else param.name
    assert_usage_error(code, err, shown)


def test_every_numeric_option_declares_its_range():
    """A range is what turns `--steps 1` or `--port -5` into a usage error instead of a crash later."""
    free = {("generate", "seed")}
    missing = [(" ".join(path), p.name) for path, c in LEAVES.items() for p in c.params
               if _kind(p) in NUMERIC and (path[-1], p.name) not in free
               and (getattr(p, "min", None) is None or getattr(p, "max", None) is None)]
    assert not missing, missing


@pytest.mark.parametrize(("argv", "hint"), [
    (["trian"], "Did you mean 'train'?"),
    (["registry", "promot", "x", "1"], "Did you mean 'promote'?"),
    (["evaluate", "run", "--dat", "x"], "Possible options: --data"),
])
def test_typos_get_a_did_you_mean_hint(argv, hint, capsys):
    code, _, err = run(argv, capsys)
    assert_usage_error(code, err, hint)


@pytest.mark.parametrize("argv", [
    ["init", "--task", "text-classification", "--train", "nope.csv", "-o", "{tmp}/c.yaml"],
    ["validate", "{tmp}/nope.yaml"],
    ["train"],
    ["train", "{tmp}/nope.yaml"],
    ["train", "--resume", "{tmp}/nope"],
    ["evaluate", "{tmp}/nope", "--data", "x.csv"],
    ["evaluate", "{tmp}/nope"],
    ["predict", "{tmp}/nope", "x.txt"],
    ["explain", "{tmp}/nope", "--text", "hi"],
    ["export", "{tmp}/nope"],
    ["export", "{tmp}/nope", "--format", "tflite"],
    ["generate", "{tmp}/nope", "--prompt", "hi"],
    ["serve", "{tmp}/nope", "--backend", "tpu"],
    ["monitor", "m", "--since", "yesterday", "--registry", "{tmp}/reg"],
    ["registry", "show", "nobody", "--registry", "{tmp}/reg"],
    ["update", "nobody", "--data", "x.csv", "--registry", "{tmp}/reg"],
    ["studio", "--runs", "{tmp}/nope"],
    ["studio", "--runs", "{tmp}", "--api-key-env", "LMFORGE_TEST_UNSET_KEY"],
    ["studio", "--runs", "{tmp}", "--host", "256.0.0.1"],
])
def test_semantic_mistakes_exit_2_in_one_line(argv, tmp_path, capsys):
    code, _, err = run([a.replace("{tmp}", str(tmp_path)) for a in argv], capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err


def test_version_and_bare_help(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.strip() == f"lmforge {__version__}"
    code, out, err = run([], capsys)
    assert code == 0 and "Usage" in out + err


def test_the_installed_entry_point_exits_with_the_code(tmp_path):
    """A real process (the console script's code path): usage error -> 2 without a traceback."""
    done = subprocess.run([sys.executable, "-m", "lmforge.cli", "train", "x.yaml", "--max-steps", "abc"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "--max-steps" in done.stderr, done.stderr


# --- monitor's exit code 3 ------------------------------------------------------------------------------

def test_monitor_exits_3_when_a_check_warns(tmp_path, cls_run, capsys):
    from conftest import negative_texts, registered_with_traffic

    registered_with_traffic(tmp_path, cls_run, negative_texts())  # only one class: the label distribution has shifted
    code, out, err = run(["monitor", "senti", "--since", "1h", "--registry", tmp_path / "reg"], capsys)
    assert code == 3, out + err
    assert "label_shift" in out


# --- the library leaves the process environment alone ------------------------------------------------

class _Recorder(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        _Recorder.seen.append(self.path)
        self.send_response(404)
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


def test_import_leaves_hub_settings_alone_and_loads_never_reach_the_hub(tmp_path, cls_run):
    """`import lmforge` must not switch a notebook's own downloads off, and lmforge's own loads must
    not ask any hub even when the process allows downloads (a fake hub records every request)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}", HF_HOME=str(tmp_path / "hf"))
    script = ("import os, lmforge\n"
              "assert 'HF_HUB_OFFLINE' not in os.environ and 'TRANSFORMERS_OFFLINE' not in os.environ\n"
              "from lmforge import Predictor\n"
              f"print(Predictor.from_run({str(cls_run)!r}).predict(['the movie great was'])[0]['label'])\n")
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=env)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr
    assert _Recorder.seen == []


def test_label_delimiter_override_is_taken_verbatim(tmp_path, tiny_model, capsys):
    """`data.label_delimiter=|` used to reach the config as an empty string (YAML's block scalar)."""
    from conftest import make_config

    rows = [{"text": t, "label": f"{label}|extra"} for t, label in sentiment_rows(24, 3)]
    data = {"train": jsonl(tmp_path / "train.jsonl", rows), "dev": jsonl(tmp_path / "dev.jsonl", rows[:8])}
    cfg = make_config(tmp_path, tiny_model, data)
    code, out, err = run(["validate", cfg, "data.multi_label=true", "data.label_delimiter=|"], capsys)
    assert code == 0, err
    assert "extra" in out
    code, _, err = run(["validate", cfg, "data.multi_label=true", 'data.label_delimiter=""'], capsys)
    assert code == 2 and "label_delimiter" in err, err


# --- registry names and versions at the command line ---------------------------------------------------

BAD_NAMES = ["x" * 300, "..", "a/b", "ünïcode", "x" * 101, "a\nb"]  # ("-x" is an unknown option)


@pytest.mark.parametrize("bad", BAD_NAMES, ids=lambda n: repr(n[:12]))
@pytest.mark.parametrize("argv", [["registry", "add", "{name}", "run"], ["registry", "show", "{name}"],
                                  ["registry", "promote", "{name}", "1"], ["registry", "archive", "{name}", "1"],
                                  ["registry", "rollback", "{name}"], ["registry", "diff", "{name}", "1", "2"],
                                  ["registry", "list", "{name}"], ["update", "{name}", "--data", "d.csv"], ["monitor", "{name}"],
                                  ["serve", "registry:{name}"]], ids=lambda a: " ".join(a[:2]))
def test_bad_model_names_exit_2_and_create_nothing(argv, bad, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LMFORGE_REGISTRY", raising=False)
    code, _, err = run([a.replace("{name}", bad) for a in argv], capsys)
    assert code == 2 and "bad model name" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []  # no ./registry folder was created on the way


@pytest.mark.parametrize(("version", "needle"), [("0", "'version'"), ("100000000000000000000000000000", "'version'"),
                                                  ("-1", "No such option: -1")])
def test_out_of_range_versions_are_usage_errors(version, needle, tmp_path, capsys):
    code, _, err = run(["registry", "promote", "intents", version, "--registry", tmp_path / "reg"], capsys)
    assert_usage_error(code, err, needle)
