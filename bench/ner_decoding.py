"""NER decoding, side by side on the same trained model: each word's own most probable tag (then
repaired to valid IOB2, what lmforge did before) against the most probable valid IOB2 path of the
sentence (Viterbi, lmforge's decoding for new runs).

    python bench/ner_decoding.py --run RUN --data DEV_FILE TEST_FILE [--name ner_decoding] [--label weibo-seed42]

Any trained NER run folder works (`bench/multilingual.py --keep-runs DIR` keeps its runs); the
model's forward pass is the same for both, only the decoding of its tag probabilities differs.
Results are added to bench/results/NAME.json under the label.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--name", default="ner_decoding")
    parser.add_argument("--label", default=None, help="key of this run in the results file; default: the run folder's name")
    args = parser.parse_args()

    from lmforge.data.load import read_split
    from lmforge.predictor import Predictor

    predictor = Predictor.from_run(args.run)
    if not predictor.task.token_level:
        sys.exit(f"{args.run}: not a token-classification run")
    result: dict = {"run": str(args.run)}
    for path in args.data:
        examples, _ = read_split(predictor.config, path, scheme="auto")
        row = {}
        for decoding, viterbi in (("argmax", False), ("viterbi", True)):
            predictor.task.viterbi = viterbi
            report, _ = predictor.evaluate(examples)
            row[decoding] = {k: round(report[k] * 100, 2) for k in ("f1", "precision", "recall")}
        row["f1_gain"] = round(row["viterbi"]["f1"] - row["argmax"]["f1"], 2)
        result[path.name] = row
        print(path.name, json.dumps(row), flush=True)
    save_run(args.name, args.label or args.run.name, result)


if __name__ == "__main__":
    main()
