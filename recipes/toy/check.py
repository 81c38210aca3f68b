"""make toy-check: the three quality gates of the toy diffusion model (recipes/toy/model), measured
on a held-out toy city (seed 2000: neither the model's corpus nor the demo's scenes).

1. VAE reconstruction PSNR on held-out val images of every style, at the model's size (64x128);
   gate: >= 28 dB for every style.
2. Layout kept: a segmenter trained on real images of all five styles scores ZoDi translations of
   held-out clear val images (against their source labels) and real val images of the style;
   gate: the translation mIoU >= 85 % of the real-image mIoU, and no class below 50 % of its
   real-image IoU.
3. Style reached: a small style classifier trained on real images of the five styles labels the
   translations; gate: >= 90 % of fog translations called fog, and of night translations night.

The segmenter, the translations and the evaluations are plain zodi commands (printed as they run);
the VAE and the classifier are checked here. Usage: python recipes/toy/check.py [OUT] [--iters N] [--style-iters N]
[--seed S] (another city, to tune settings on without touching the check's) [--model DIR] (another exported
stack than recipes/toy/model, e.g. a training run's OUT)
Writes OUT/toy_check.json and prints the figures; exits 1 when a gate is missed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from zodicli.errors import quiet_libraries
from zodicli.settings import yaml_fingerprint   # the toy yamls' values key the cached results

STYLES = ("clear", "fog", "night", "rain", "snow")
TARGETS = ("fog", "night")
SIZE = (64, 128)
MODEL = Path("recipes/toy/model")     # --model: another exported stack (e.g. train-toy's OUT) in its place


def zodi(*args, wait: bool = True):
    """Run ``zodi ARGS``: its stdout, or with ``wait=False`` the process (pass it to ``finish``)."""
    print("+ zodi " + " ".join(map(str, args)), file=sys.stderr)
    proc = subprocess.Popen(["zodi", *map(str, args)], stdout=subprocess.PIPE, text=True)
    return finish(proc) if wait else proc


def finish(proc) -> str:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"toy-check: {' '.join(proc.args)} failed ({proc.returncode})")
    return out


def forget_stale_results(out: Path, model: Path = MODEL) -> None:
    """Translations and scores made with other weights or yamls, on another city, or with unknown
    ones (no stamp yet) are removed, not resumed: zodi would refuse them, since the model's hash
    and the dataset's fingerprint are among their inputs. The segmenter stays (it trains on the
    train split, which --n-val leaves alone; train-seg refuses a changed one with a clear error)."""
    from zodicli.store.fingerprint import tree_fingerprint

    city = out / "toy" / "toy.json"
    stamp = " ".join([tree_fingerprint(model / "sd"), tree_fingerprint(model / "controlnet"), *(yaml_fingerprint(f"recipes/toy/{t}.yaml") for t in TARGETS),
                      city.read_text().strip() if city.is_file() else ""])
    mark = out / "model.stamp"
    if not mark.is_file() or mark.read_text() != stamp:
        for t in TARGETS:
            for p in (out / f"{t}-val.h5", out / f"preds-{t}-translated.h5", out / f"preds-{t}-real.h5"):
                for q in (p, p.with_name(p.name + ".parts"), p.with_suffix(".eval")):
                    shutil.rmtree(q) if q.is_dir() else q.unlink(missing_ok=True)
    mark.write_text(stamp)


def image_confusions(preds: Path, spec: str, num_classes: int) -> np.ndarray:
    """(N, C, C + 1) confusion counts, one per image of ``spec``, from an evaluate artifact."""
    from zodicli.data.registry import open_dataset
    from zodicli.metrics.confusion import ConfusionMatrix
    from zodicli.store.artifact import Artifact

    ds, art = open_dataset(spec), Artifact(preds)
    out = []
    for k in ds.keys():
        cm = ConfusionMatrix(num_classes)
        cm.update(art.get("preds", k), ds.label(k), k)
        out.append(cm.counts)
    return np.stack(out)


def bootstrap_ratio(real: np.ndarray, trans: np.ndarray, names: list[str], draws: int = 1000, seed: int = 0) -> dict:
    """5th and 95th percentiles of mIoU(translations) / mIoU(real), and of each class's IoU ratio, when
    both image sets are redrawn with replacement (they are different images, so independently):
    ``{"miou": [lo, hi], "class": {name: [lo, hi]}}``. A class absent from a redraw is left out of it."""
    from zodicli.metrics.confusion import ConfusionMatrix

    def scores(counts):
        cm = ConfusionMatrix(counts.shape[0])
        cm.counts = counts
        return cm.scores(names)

    rng = np.random.default_rng(seed)
    miou, per_class = [], {c: [] for c in names}
    for _ in range(draws):
        t = scores(trans[rng.integers(0, len(trans), len(trans))].sum(0))
        r = scores(real[rng.integers(0, len(real), len(real))].sum(0))
        miou.append(t["miou"] / r["miou"])
        for c in names:
            if r["iou"][c] > 0 and math.isfinite(t["iou"][c]):
                per_class[c].append(t["iou"][c] / r["iou"][c])

    def interval(v):
        return [round(float(x), 3) for x in np.percentile(v, [5, 95])]

    return {"miou": interval(miou), "class": {c: interval(v) for c, v in per_class.items() if v}}


def vae_psnr(n: int, model: Path = MODEL) -> dict[str, float]:
    """Mean PSNR (dB) of encode -> decode (posterior mean) over ``n`` val images per style."""
    import torch
    from diffusers import AutoencoderKL

    from zodicli.data.registry import open_dataset
    from zodicli.diffusion.layout import resize_image

    vae = AutoencoderKL.from_pretrained(model / "sd", subfolder="vae", local_files_only=True,
                                        low_cpu_mem_usage=False).float().eval()  # True needs accelerate (not a dependency) and warns
    out = {}
    for style in STYLES:
        ds = open_dataset(f"toy:{style}:val")
        x = np.stack([resize_image(ds.image(k), SIZE) for k in ds.keys()[:n]])
        x = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        rec = ((rec + 1) * 127.5).round() / 127.5 - 1                   # scored as the uint8 image it becomes
        mse = ((rec - x) ** 2).mean(dim=(1, 2, 3))
        out[style] = round(float((10 * torch.log10(4 / mse)).mean()), 2)
    return out


class StyleNet:
    """A small CNN (4 strided convs, global pooling) over 64x128 images, five styles."""

    def __init__(self, seed: int = 0):
        import torch
        from torch import nn

        torch.manual_seed(seed)
        layers, c = [], 3
        for w in (16, 32, 64, 64):
            layers += [nn.Conv2d(c, w, 3, 2, 1), nn.BatchNorm2d(w), nn.ReLU()]
            c = w
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, len(STYLES)))

    def fit(self, images: np.ndarray, styles: np.ndarray, iters: int = 1000, seed: int = 0) -> None:
        """Adam at 2e-3, batch 32. 300 iterations were seed-sensitive (real fog val
        right 28-100 % across seeds); 1,000 gave 97-100 % on every style for seeds 0 and 1."""
        import torch

        rng = np.random.default_rng(seed)
        opt = torch.optim.Adam(self.net.parameters(), 2e-3)
        x = self._tensor(images)
        y = torch.from_numpy(styles).long()
        self.net.train()
        for _ in range(iters):
            idx = torch.from_numpy(rng.integers(0, len(x), 32))
            loss = torch.nn.functional.cross_entropy(self.net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()

    def predict(self, images: np.ndarray) -> np.ndarray:
        import torch

        self.net.eval()
        with torch.no_grad():
            return self.net(self._tensor(images)).argmax(1).numpy()

    @staticmethod
    def _tensor(images):
        import torch

        return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255


def style_shares(out: Path, synth: dict[str, Path], iters: int = 1000) -> dict:
    """Train the classifier on real train images of every style; share of translations per style."""
    from zodicli.data.registry import open_dataset
    from zodicli.diffusion.layout import resize_image
    from zodicli.store.artifact import Artifact

    def load(spec, n=None):
        ds = open_dataset(spec)
        return np.stack([resize_image(ds.image(k), SIZE) for k in ds.keys()[:n]])

    train = [load(f"toy:{s}:train") for s in STYLES]
    clf = StyleNet()
    clf.fit(np.concatenate(train), np.concatenate([np.full(len(t), i) for i, t in enumerate(train)]), iters)
    real_acc = {s: float((clf.predict(load(f"toy:{s}:val")) == i).mean()) for i, s in enumerate(STYLES)}
    shares = {}
    for target, path in synth.items():
        art = Artifact(path)
        images = np.stack([resize_image(art.get("images", k), SIZE) for k in art.keys])
        pred = clf.predict(images)
        shares[target] = {s: round(float((pred == i).mean()), 3) for i, s in enumerate(STYLES)}
    return {"real_val_accuracy": real_acc, "translations": shares}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="runs/toy-check")
    ap.add_argument("--iters", type=int, default=3000, help="segmenter iterations (all styles)")
    ap.add_argument("--n-train", type=int, default=100, help="held-out train scenes per style")
    ap.add_argument("--style-iters", type=int, default=1000, help="style classifier iterations")
    # 40 scenes made a noisy gate: the same weights scored fog layout 83 % on them and 91 % on 120
    # (the first 40 included), and a few dozen small objects decided a class like bus.
    ap.add_argument("--n-val", type=int, default=120, help="held-out val scenes per style")
    ap.add_argument("--seed", type=int, default=2000, help="the held-out city's seed (another one makes a tuning city)")
    ap.add_argument("--model", type=Path, default=MODEL, help="the exported stack to check (sd/, controlnet/)")
    ap.add_argument("--card", action="store_true", help="write the figures into MODEL/MODEL_CARD.md")
    args = ap.parse_args()
    out = Path(args.out)
    # The segmenter trains in a second process beside the rest, one thread each (as in the demo).
    os.environ.update(ZODI_TOY_ROOT=str(out / "toy"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    quiet_libraries()
    zodi("datasets", "make-toy", "--out", out / "toy", "--n-train", args.n_train, "--n-val", args.n_val, "--seed", args.seed)
    forget_stale_results(out, args.model)

    # The segmenter must learn every class, rare ones too (trucks, buses, bicycles: 0.4-0.8 % of
    # pixels), for the per-class gate to measure the translations and not the segmenter: AdamW,
    # rare-class sampling, 3,000 iterations. SGD for 1,000 scored 0-30 % IoU on them, real images included.
    # NCHW, as before train-seg defaulted to NHWC: the judge stays the one whose figures the model card holds.
    every = "+".join(f"toy:{s}:train" for s in STYLES)
    seg = zodi("train-seg", "--model", "deeplabv3plus_tiny", "--source", every, "--iters", args.iters, "--batch-size", 16,
               "--resize", "64x128", "--crop", "none", "--optimizer", "adamw", "--lr", 0.01, "--rcs-temperature", 0.01,
               "--ckpt-every", args.iters, "--num-workers", 0, "--no-channels-last", "--out", out / "seg", wait=False)
    synth = {t: out / f"{t}-val.h5" for t in TARGETS}
    for t in TARGETS:
        zodi("translate", "--config", f"recipes/toy/{t}.yaml", "--model", args.model / "sd", "--controlnet", args.model / "controlnet",
             "--src", "toy:clear:val", "--out", synth[t])
    psnr = vae_psnr(args.n_val, args.model)
    style = style_shares(out, synth, args.style_iters)
    finish(seg)

    layout = {}
    for t in TARGETS:
        scores = {}
        for what, spec in (("real", f"toy:{t}:val"), ("translated", f"h5:{synth[t]}")):
            scores[what] = json.loads(zodi("evaluate", "--checkpoint", out / "seg/last.pt", "--dataset", spec, "--size", "64x128",
                                           "--batch-size", 16, "--out", out / f"preds-{t}-{what}.h5", "--json"))
        real, trans = scores["real"], scores["translated"]
        per_class = {c: round(trans["iou"][c] / real["iou"][c], 3) for c in real["iou"]
                     if math.isfinite(real["iou"][c]) and real["iou"][c] > 0 and math.isfinite(trans["iou"].get(c, math.nan))}
        names = real["class_names"]
        boot = bootstrap_ratio(image_confusions(out / f"preds-{t}-real.h5", f"toy:{t}:val", len(names)),
                               image_confusions(out / f"preds-{t}-translated.h5", f"h5:{synth[t]}", len(names)), names)
        layout[t] = {"real_miou": real["miou"], "translated_miou": trans["miou"],
                     "ratio": round(trans["miou"] / real["miou"], 3), "ratio_90_interval": boot["miou"], "class_ratio": per_class,
                     "class_ratio_90_interval": {c: boot["class"][c] for c in per_class if c in boot["class"]},
                     "class_iou_percent": {c: [round(real["iou"][c], 1), round(trans["iou"][c], 1)] for c in per_class}}

    gates = {
        "vae_psnr>=28": all(v >= 28 for v in psnr.values()),
        "layout>=0.85": all(v["ratio"] >= 0.85 for v in layout.values()),
        "class>=0.5": all(min(v["class_ratio"].values()) >= 0.5 for v in layout.values()),
        "style>=0.9": all(style["translations"][t][t] >= 0.9 for t in TARGETS),
    }
    report = {"vae_psnr_db": psnr, "layout_kept": layout, "style": style, "gates": gates,
              "model": str(args.model),
              "model_steps": (args.model / "STEPS").read_text().strip() if (args.model / "STEPS").is_file() else "?", "city_seed": args.seed}
    (out / "toy_check.json").write_text(json.dumps(report, indent=1) + "\n")

    lines = [f"Measured by `make toy-check` on a held-out toy city (seed {args.seed}, {args.n_val} val images per style), "
             f"model at {report['model_steps']} UNet steps:",
             "- VAE PSNR (dB): " + ", ".join(f"{s} {v:.1f}" for s, v in psnr.items()) + " (gate >= 28)"]
    for t, v in layout.items():
        worst = min(v["class_ratio"], key=v["class_ratio"].get)
        lines.append(f"- layout kept, {t}: {v['translated_miou']:.1f} mIoU on translations / {v['real_miou']:.1f} on real "
                     f"= {100 * v['ratio']:.0f} % (90 % bootstrap interval over images {100 * v['ratio_90_interval'][0]:.0f}-"
                     f"{100 * v['ratio_90_interval'][1]:.0f} %; gate >= 85 %); worst class {worst} at {100 * v['class_ratio'][worst]:.0f} % "
                     f"(IoU {v['class_iou_percent'][worst][1]:.1f} vs {v['class_iou_percent'][worst][0]:.1f} % real; interval "
                     f"{'-'.join(f'{100 * x:.0f}' for x in v['class_ratio_90_interval'].get(worst, [math.nan] * 2))} %; gate >= 50 %)")
        below = [c for c in sorted(v["class_ratio"], key=v["class_ratio"].get) if c != worst and v["class_ratio"][c] < 0.5]
        if below:
            lines[-1] += "; also below half: " + ", ".join(f"{c} {100 * v['class_ratio'][c]:.0f} %" for c in below)
    for t in TARGETS:
        lines.append(f"- style reached, {t}: {100 * style['translations'][t][t]:.0f} % of translations called {t} (gate >= 90 %; "
                     f"the classifier gets {100 * style['real_val_accuracy'][t]:.0f} % of real {t} val right)")
    lines.append("- gates: " + ", ".join(f"{k} {'PASS' if v else 'MISS'}" for k, v in gates.items()))
    print("\n".join(lines))
    if args.card:
        card = args.model / "MODEL_CARD.md"
        head = card.read_text().split("## Quality")[0]
        card.write_text(head + "## Quality\n" + "\n".join(lines) + "\n")
    return 0 if all(gates.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
