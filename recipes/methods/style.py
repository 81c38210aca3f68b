"""Share of each row's translations (OUT/synth/ROW-val.h5) that the toy check's style classifier
(recipes/toy/check.py: StyleNet) assigns to thermal, trained here on real toy clear and thermal train
images; prints JSON with its accuracy on real val too.

    python recipes/methods/style.py OUT ROW...      (STYLE_ITERS: classifier iterations, default 1000)
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path


def main() -> None:
    out, rows = Path(sys.argv[1]), sys.argv[2:]
    spec = importlib.util.spec_from_file_location("toy_check", Path(__file__).parents[1] / "toy/check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    check.STYLES = ("clear", "thermal")                  # the classes this city has
    res = check.style_shares(out, {row: out / "synth" / f"{row}-val.h5" for row in rows},
                             iters=int(os.environ.get("STYLE_ITERS", 1000)))
    print(json.dumps({"real_val_accuracy": res["real_val_accuracy"],
                      "thermal_share": {row: s["thermal"] for row, s in res["translations"].items()}}))


if __name__ == "__main__":
    main()
