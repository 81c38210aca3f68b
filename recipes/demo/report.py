"""Collect a demo run (recipes/demo/run.sh): print the table, write OUT/metrics.json, OUT/table.md
and OUT/contact_sheet.png (source | layout | fog | night translations of clear val images).
Usage: python recipes/demo/report.py OUT "SEEDS" ["DOMAINS"]"""
from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

METHODS = [  # (row name, run folder; {d} is the target domain)
    ("source-only", "source-only"),
    ("photometric augmentation", "photometric"),
    ("ZoDi", "zodi-{d}"),
    ("ZoDi + photometric", "zodi-photometric-{d}"),
    ("ZoDi + pseudo-labels", "zodi-pl-{d}"),
    ("oracle (target labels)", "oracle-{d}"),
]


def collect(out: Path, seeds: list[int], domains: list[str]) -> list[dict]:
    results = []
    for seed in seeds:
        for method, folder in METHODS:
            for d in domains:
                run = out / f"seed{seed}" / folder.format(d=d)
                real = json.loads((run / f"metrics-{d}.json").read_text())
                est = json.loads((run / f"metrics-{d}-estimate.json").read_text())
                results.append({"method": method, "condition": d, "seed": seed, "miou": round(real["miou"], 2),
                                "estimate": round(est["miou"], 2)})
    return results


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def table(results: list[dict]) -> str:
    """Markdown: a row per method, the real target mIoU and the estimate per domain (mean ± std)."""
    seeds = sorted({r["seed"] for r in results})
    domains = list(dict.fromkeys(r["condition"] for r in results))
    head = ["method"] + [c for d in domains for c in (d, f"{d} estimate")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    mean = {}
    for method, _ in METHODS:
        row = [method]
        for d in domains:
            rs = [r for r in results if r["method"] == method and r["condition"] == d]
            mean[method, d] = statistics.mean(r["miou"] for r in rs)
            row += [cell([r["miou"] for r in rs]), cell([r["estimate"] for r in rs])]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    n = f"mean ± std of {len(seeds)} seeds" if len(seeds) > 1 else "one seed"
    lines.append(f"mIoU (%) on the toy city's real {' / '.join(domains)} val images ({n}). 'estimate': the same model "
                 "on ZoDi translations of clear val images, scored against their source labels (no target images).")
    for d in domains:
        gap = mean["oracle (target labels)", d] - mean["source-only", d]
        gain = mean["ZoDi", d] - mean["source-only", d]
        lines.append(f"- {d}: ZoDi − source-only {gain:+.1f}, ZoDi − photometric "
                     f"{mean['ZoDi', d] - mean['photometric augmentation', d]:+.1f}; ZoDi closes "
                     f"{100 * gain / gap if gap > 0 else float('nan'):.0f} % of the source-only → oracle gap.")
    return "\n".join(lines)


def contact_sheet(out: Path, domains: list[str], n: int = 4) -> Path:
    import os

    os.environ.setdefault("ZODI_TOY_ROOT", str(out / "toy"))
    from zodicli.data.registry import open_dataset
    from zodicli.metrics.figures import contact_sheet as sheet
    from zodicli.store.artifact import Artifact

    arts = [Artifact(out / "synth" / f"{d}-val.h5") for d in domains]
    src = open_dataset("toy:clear:val")
    rows = [(k, src.image(k), arts[0].get("labels", k), *(a.get("images", k) for a in arts)) for k in arts[0].keys[:n]]
    sheet(out / "contact_sheet.png", rows)
    return out / "contact_sheet.png"


def main(out: str, seeds: str, domains: str = "fog night") -> None:
    out, seeds, domains = Path(out), [int(s) for s in seeds.split()], domains.split()
    results = collect(out, seeds, domains)
    text = table(results)
    steps = Path("recipes/toy/model/STEPS").read_text().strip()
    settings = {"seeds": seeds, "domains": domains, "segmenter": "deeplabv3plus_tiny", "diffusion_model": f"recipes/toy/model ({steps} steps)",
                "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, CPU",
                "runs": str(out)}
    (out / "metrics.json").write_text(json.dumps({"results": results, "settings": settings}, indent=1) + "\n")
    (out / "table.md").write_text(text + "\n")
    sheet = contact_sheet(out, domains)
    print(f"\nzodi demo: toy city, clear -> {' / '.join(domains)} ({settings['date']}, {settings['machine']})\n")
    print(text)
    print(f"\nWritten: {out}/metrics.json, {out}/table.md, {sheet} (source | layout | {' | '.join(domains)})")


if __name__ == "__main__":
    main(*sys.argv[1:])
