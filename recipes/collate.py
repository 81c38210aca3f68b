"""Collate a paper-table run into a markdown table: mean ± std over seeds of the target mIoU beside
the published number (REFERENCE §4-6). Prints it and writes OUT/table.md.

    python recipes/collate.py zodi OUT "MODELS" "DOMAINS" "SEEDS"    # OUT/MODEL/DOMAIN-seedS/target.json
    python recipes/collate.py madm OUT "TARGETS" "SEEDS"             # OUT/TARGET-seedS/target.json
    python recipes/collate.py diff OUT "TARGETS" "SEEDS"             # OUT/seedS/TARGET.json
"""
import json
import statistics
import sys
from pathlib import Path

ZODI = {  # ZoDi (Azuma et al. 2024), ACDC val / GTA5 val ("game"), mean of 3 seeds, best target epoch
    "deeplabv3plus_r50": {"night": 26.44, "snow": 47.41, "rain": 48.67, "fog": 58.65, "game": 41.84},
    "deeplabv3plus_r101": {"night": 26.77, "snow": 47.62, "rain": 48.05, "fog": 61.42, "game": 43.04},
    "refinenet_lw_r50": {"night": 28.13, "snow": 48.94, "rain": 49.26, "fog": 64.91, "game": 44.56},
}
MADM = {"infrared": 62.23, "event": 56.31}   # Cityscapes -> FMB (9 classes), -> DSEC (11 classes)
DIFF = {}   # the reference gives only "+2.7 mIoU over the previous best DG method" on GTA5 -> Cityscapes


def miou(path: Path) -> float:
    return json.loads(path.read_text())["miou"]


def cell(values) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def pub(value) -> str:
    return f"{value:.2f}" if value is not None else "–"


def main(kind: str, out: str, *args: str) -> None:
    out = Path(out)
    if kind == "zodi":
        models, rows, seeds = args[0].split(), args[1].split(), args[2].split()
        head = ["domain"] + [c for m in models for c in (f"{m} zodi", "published")]
        body = [[d] + [c for m in models for c in (cell([miou(out / m / f"{d}-seed{s}" / "target.json") for s in seeds]),
                                                   pub(ZODI.get(m, {}).get(d)))] for d in rows]
        note = "ZoDi table: target mIoU (%); zodi selects the last checkpoint, the paper its best target epoch (an oracle)"
    else:
        rows, seeds = args[0].split(), args[1].split()
        where = (lambda t, s: out / f"{t}-seed{s}" / "target.json") if kind == "madm" else (lambda t, s: out / f"seed{s}" / f"{t}.json")
        published = MADM if kind == "madm" else DIFF
        head = ["target", f"{kind} (zodi)", "published"]
        body = [[t, cell([miou(where(t, s)) for s in seeds]), pub(published.get(t))] for t in rows]
        note = {"madm": "MADM: target mIoU (%) in the target's class set (madm9 / madm11)",
                "diff": "DIFF: domain generalisation, mIoU (%) on unseen targets; the paper reports +2.7 over the previous best"}[kind]
    lines = [f"{note}; seeds {', '.join(seeds)}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    text = "\n".join(lines)
    (out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main(*sys.argv[1:])
