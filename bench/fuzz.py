"""Everything a user or a hostile client can send, tried in bulk: malformed command lines, malformed
data files, malformed and hostile HTTP requests, hostile programs for the code sandbox; plus the
serving soak. One table of outcomes; the goals are 0 tracebacks, 0 exit-1 "bugs", 0 server errors
(5xx), 0 dropped connections and 0 sandbox escapes.

    python bench/fuzz.py [--cli 2000] [--files 200] [--http 2000] [--soak 20000 --clients 64] [--only cli,files,...]

The test suite runs small, seeded versions of the same generators on every CI run
(tests/unit/test_cli_contract.py, test_data_fuzz.py, test_serve_hostile.py, test_codeeval_sandbox.py);
this script is the longer soak, run by hand, alone on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save  # noqa: E402

HOSTILE_VALUES = ["", "-1", "0", "1", "abc", "nan", "inf", "-inf", "1e999", "9" * 40, "-" * 3, "\x00", "\ud800", "é",
                  "a" * 5000, "../" * 50, "/dev/null", "/", "--", "-h", "=", "{}", "[]", "null", "true", "0x10", "1_000"]


def _leaves():
    import typer.main

    from lmforge.cli import app

    def walk(command, path):
        if hasattr(command, "commands"):
            for name, sub in sorted(command.commands.items()):
                yield from walk(sub, (*path, name))
        else:
            yield path, command

    return list(walk(typer.main.get_command(app), ()))


def _argv(rng: random.Random, leaves, scratch: Path) -> list[str]:
    """A command line: a real subcommand (or a typo of one), some of its real options and positionals
    with hostile values, sometimes an unknown option or a stray argument."""
    path, command = rng.choice(leaves)
    argv = list(path)
    if rng.random() < 0.05:
        argv[0] = argv[0][:-1] + "x"
    params = [p for p in command.params if p.name not in ("nproc", "open_browser")]  # no launchers, no browsers
    for param in rng.sample(params, k=min(len(params), rng.randint(0, 4))):
        value = rng.choice(HOSTILE_VALUES + [str(scratch / "missing"), str(scratch)])
        if param.param_type_name == "argument":
            argv.append(value)
        elif getattr(param, "is_flag", False):
            argv.append(param.opts[-1])
        else:
            argv += [param.opts[-1], value]
    if rng.random() < 0.1:
        argv.append(rng.choice(["--bogus", "extra", "-x"]))
    return argv


def fuzz_cli(n: int, seed: int) -> dict:
    """Random command lines through `lmforge.cli.main` in process: exit codes, tracebacks."""
    from lmforge.cli import main

    rng = random.Random(seed)
    leaves = _leaves()
    outcomes: dict[str, int] = {}
    bugs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):  # whatever a command writes stays in tmp
        scratch = Path(tmp)
        for _ in range(n):
            argv = _argv(rng, leaves, scratch)
            if argv[:1] == ["serve"] or argv[:1] == ["generate"] and rng.random() < 0.9:
                continue  # serve would start a server on a valid run; generate loads a decoder: covered elsewhere
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    code = main(argv)
                except SystemExit as e:  # main must not raise; count it as a bug
                    code = f"SystemExit({e.code})"
            text = err.getvalue()
            key = f"exit {code}"
            if "Traceback" in text:
                key += " + traceback"
            outcomes[key] = outcomes.get(key, 0) + 1
            if code not in (0, 2) or "Traceback" in text:
                bugs.append({"argv": argv, "code": str(code), "stderr": text[-600:]})
    return {"tried": sum(outcomes.values()), "outcomes": outcomes, "bugs": bugs[:20], "bug_count": len(bugs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cli", type=int, default=2000, help="random command lines")
    parser.add_argument("--files", type=int, default=200, help="malformed data files of each kind")
    parser.add_argument("--http", type=int, default=2000, help="malformed / hostile / schema-generated requests")
    parser.add_argument("--soak", type=int, default=20000, help="requests of the load soak")
    parser.add_argument("--clients", type=int, default=64, help="concurrent keep-alive clients of the soak")
    parser.add_argument("--run", default=None, help="run folder served by the HTTP fuzz and the soak (default: a small one trained here)")
    parser.add_argument("--only", default="cli,files,http,programs,soak", help="comma-separated sections")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sections = set(args.only.split(","))
    result: dict = {"seed": args.seed}
    started = time.perf_counter()
    if "cli" in sections:
        result["cli"] = _timed(lambda: fuzz_cli(args.cli, args.seed))
        _show(result, "cli")
    if "files" in sections:
        from fuzz_files import run as fuzz_files

        result["files"] = _timed(lambda: fuzz_files(args.files, args.seed))
        _show(result, "files")
    if "programs" in sections:
        from fuzz_programs import run as fuzz_programs

        result["programs"] = _timed(lambda: fuzz_programs(args.seed))
        _show(result, "programs")
    if sections & {"http", "soak"}:
        run_dir = args.run or str(_small_run())
        if "http" in sections:
            from fuzz_http import run as fuzz_http

            result["http"] = _timed(lambda: fuzz_http(run_dir, args.http, args.seed))
            _show(result, "http")
        if "soak" in sections:
            from soak import soak

            # one invalid-Unicode request every 0.2 s during the soak: it once failed 11.7% of normal traffic
            result["soak"] = _timed(lambda: soak(run_dir, requests=args.soak, clients=args.clients, rounds=10,
                                                 poison_every=0.2))
            _show(result, "soak")
    result["seconds"] = round(time.perf_counter() - started, 1)
    save("fuzz", result)


def _timed(fn) -> dict:
    start = time.perf_counter()
    out = fn()
    return {**out, "seconds": round(time.perf_counter() - start, 1)}


def _show(result: dict, name: str) -> None:
    """Print a section's outcome and save everything so far (a later section that dies loses nothing)."""
    brief = {k: v for k, v in result[name].items() if k not in ("bugs", "examples", "cases")}
    print(f"{name}: {brief}", flush=True)
    save("fuzz", result)


def _small_run() -> Path:
    """The demo's intent classifier (MiniLM-L6, the bundled Banking77 sample), trained once into /tmp."""
    from lmforge.config import load_config
    from lmforge.training.loop import train

    root = Path(__file__).resolve().parents[1]
    target = Path(tempfile.gettempdir()) / "lmforge-bench" / "fuzz-intents"
    if (target / "model" / "config.json").is_file():
        return target
    cfg = load_config(root / "configs" / "intents.yaml", ["training.epochs=2"])
    return train(cfg, root / "configs", output=target, overwrite=True)


if __name__ == "__main__":
    main()
