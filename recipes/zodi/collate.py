"""Collate a ZoDi table run: mean ± std over seeds of target mIoU, beside the published numbers
(REFERENCE §4, DeepLabv3+ R50 / R101 / RefineNet R50, ACDC val, best epoch by target = oracle).

    python recipes/zodi/collate.py OUT "fog night rain snow" "1 2 3" MODEL
"""
import json
import statistics
import sys

PUBLISHED = {  # ZoDi (Azuma et al. 2024), mean of 3 seeds
    "deeplabv3plus_r50": {"night": 26.44, "snow": 47.41, "rain": 48.67, "fog": 58.65, "game": 41.84},
    "deeplabv3plus_r101": {"night": 26.77, "snow": 47.62, "rain": 48.05, "fog": 61.42, "game": 43.04},
    "refinenet_lw_r50": {"night": 28.13, "snow": 48.94, "rain": 49.26, "fog": 64.91, "game": 44.56},
}


def main():
    out, domains, seeds, model = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4]
    pub = PUBLISHED.get(model, {})
    print(f"ZoDi table: {model}, target mIoU (%), mean ± std over seeds {', '.join(seeds)}; "
          "zodi selects the last checkpoint (no oracle), the paper its best target epoch")
    print(f"{'domain':<8} {'zodi':>14} {'published':>10}")
    for d in domains:
        vals = [json.load(open(f"{out}/{d}-seed{s}/target.json"))["miou"] for s in seeds]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        print(f"{d:<8} {statistics.mean(vals):8.2f} ± {sd:4.2f} {pub.get(d, float('nan')):10.2f}")


if __name__ == "__main__":
    main()
