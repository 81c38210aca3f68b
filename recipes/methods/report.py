"""The methods table: OUT/metrics.json ({"results": [{method, condition, seed, miou}], "settings": ...}) and
OUT/table.md (mean ± std over seeds), printed too.

    python recipes/methods/report.py OUT "SEEDS" ROW...
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    out, seeds, rows = Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3:]
    results = []
    for seed in seeds:
        for row in rows:
            m = json.loads((out / f"seed{seed}" / row / "metrics-thermal.json").read_text())
            results.append({"method": row, "condition": "thermal", "seed": int(seed), "miou": m["miou"]})
    settings = {"seeds": [int(s) for s in seeds], "translation": "recipes/toy/thermal.yaml",
                "finetune": {k: json.loads((out / k / "zodi_finetune.json").read_text())["settings"]
                             for k in sorted(p.name for p in out.glob("lora-*"))}}
    shares = json.loads((out / "style.json").read_text())["thermal_share"]
    settings["style_classifier"] = "recipes/methods/style.py (StyleNet of recipes/toy/check.py, clear vs thermal)"
    lines = ["| method | thermal | translations called thermal |", "|---|---|---|"]
    for row in rows:
        v = [r["miou"] for r in results if r["method"] == row]
        share = f"{100 * shares[row]:.0f} %" if row in shares else "—"
        lines.append(f"| {row} | {np.mean(v):.1f}" + (f" ± {np.std(v):.1f}" if len(v) > 1 else "") + f" | {share} |")
    table = "\n".join(lines) + "\n"
    (out / "metrics.json").write_text(json.dumps({"results": results, "settings": settings, "thermal_share": shares},
                                                 indent=1) + "\n")
    (out / "table.md").write_text(table)
    print(f"mIoU (%) on toy thermal val, {len(seeds)} seed(s)\n\n{table}")


if __name__ == "__main__":
    main()
