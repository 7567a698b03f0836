"""Screenshots of every studio page for the README (docs/studio/*.png), taken in Debian's Chromium.

    bash scripts/demo.sh                      # DEMO_SERVE=0 is enough: runs/intents, runs/intents-v2, runs/registry
    .venv/bin/python scripts/studio_screenshots.py [--out docs/studio]

It adds a labelling queue (`lmforge suggest runs/intents --pool examples/texts.txt`), starts the studio
over runs/ and runs/registry on a free port, and visits each page as a person would.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "studio")
    args = parser.parse_args()
    import uvicorn
    from playwright.sync_api import sync_playwright

    from lmforge.active.suggest import suggest, write_suggestions
    from lmforge.studio.app import StudioSettings, create_app
    from lmforge.studio.catalog import run_id

    runs, registry = ROOT / "runs", ROOT / "runs" / "registry"
    if not (runs / "intents" / "model").is_dir() or not registry.is_dir():
        raise SystemExit("run `bash scripts/demo.sh` first (DEMO_SERVE=0 is enough)")
    queue = runs / "to_label.jsonl"
    for stale in (queue, runs / "to_label.labels.db", runs / "to_label.labelled.jsonl"):
        stale.unlink(missing_ok=True)
    write_suggestions(suggest(runs / "intents", ROOT / "examples" / "texts.txt", 5, seed=0), queue)
    port = free_port()
    app = create_app(StudioSettings(runs=[runs], registry=registry, label_files=[queue]))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    args.out.mkdir(parents=True, exist_ok=True)
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1100, "height": 720})

        def shot(name: str) -> None:
            page.screenshot(path=str(args.out / f"{name}.png"))
            print("wrote", args.out / f"{name}.png")

        page.goto(base + "/runs")
        shot("runs")
        page.goto(base + f"/runs/{run_id(runs / 'intents')}")
        shot("run")
        page.goto(base + f"/compare?id={run_id(runs / 'intents')}&id={run_id(runs / 'intents-v2')}")
        shot("compare")
        page.goto(base + "/playground")
        page.fill("#text", "my new card still has not arrived, how long does delivery take?")
        page.click("#predict")
        page.wait_for_selector("#result")
        shot("playground")
        page.goto(base + "/registry")
        shot("registry")
        page.goto(base + "/monitor?model=intents&since=24h")
        page.wait_for_selector("#overall", timeout=60_000)  # a first read of the log shows a self-reloading page
        shot("monitor")
        page.goto(base + "/label")
        page.click("text=to_label.jsonl")
        page.wait_for_selector("#item-text")
        shot("label")
        browser.close()
    server.should_exit = True


if __name__ == "__main__":
    main()
