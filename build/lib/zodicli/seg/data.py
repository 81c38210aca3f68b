"""Training samples for train-seg.

A sample is a pure function of (seed, global position): the position picks the source key (a
per-epoch permutation, or rare-class sampling), and a generator seeded by (seed, position) drives
the crop, flip, jitter and the choice of synthetic and target items. Resuming at iteration i is
therefore just starting at position i * batch * world_size, whatever the number of workers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..runtime import item_rng, key_seed
from .augment import color_jitter, crop_box, normalize, photometric, resize_image, resize_label, to_tensor

IGNORE = 255


@dataclass
class Augment:
    resize: tuple[int, int] | None = None      # (H, W) before cropping
    crop: tuple[int, int] | None = None        # (H, W) random crop
    flip: bool = True
    jitter: bool = True
    photometric: bool = False                  # the strong photometric baseline on top of the jitter


class TrainSet(torch.utils.data.Dataset):
    """``dataset[pos]`` -> dict of tensors: ``src`` (3, H, W) normalised, ``lbl`` (H, W) long, and
    with synthetic data ``syn``; with target data ``tgt`` and, with pseudo-labels, ``pl``, ``pl_w``."""

    def __init__(self, source, aug: Augment, seed: int, synth=(), target=None, pseudo=None,
                 pl_threshold: float = 0.968, rcs_temperature: float | None = None, cache_dir: Path | None = None,
                 cache_mb: float = 0):
        self.source, self.aug, self.seed = source, aug, seed
        self._cache, self._cache_left = {}, int(cache_mb * 2 ** 20)
        self.keys = source.keys()
        if not self.keys:
            raise InputError(f"{source.spec} has no items", "check the dataset")
        if not source.has_labels:
            raise InputError(f"{source.spec} has no labels", "train on a labelled split")
        self.synth = list(synth)
        for s in self.synth:
            have = set(s.keys())
            missing = [k for k in self.keys if k not in have]
            if missing:
                raise InputError(f"{len(missing)} of {len(self.keys)} source images have no translation in {s.spec}, "
                                 f"e.g. {missing[0]!r}", "translate the whole source split (pairs are matched by key)")
        self.target, self.pseudo, self.pl_threshold = target, pseudo, pl_threshold
        if pseudo is not None:
            have = set(pseudo.keys)
            missing = [k for k in target.keys() if k not in have]
            if missing:
                raise InputError(f"{len(missing)} target images have no pseudo-label in {pseudo.path}, e.g. {missing[0]!r}",
                                 "pseudo-label the same target split")
        self.rcs = self._rcs_table(rcs_temperature, cache_dir) if rcs_temperature else None

    def __len__(self):
        return 1 << 40   # positions are unbounded; the sampler decides which are drawn

    # -- which item a position reads ----------------------------------------------------------
    def key_at(self, pos: int) -> str:
        n = len(self.keys)
        if self.rcs is not None:
            rng = item_rng(self.seed, "rcs", pos)
            probs, members = self.rcs
            c = rng.choice(len(probs), p=probs)
            return members[c][int(rng.integers(len(members[c])))]
        epoch, i = divmod(pos, n)
        perm = np.random.default_rng(key_seed(self.seed, "epoch", epoch)).permutation(n)
        return self.keys[perm[i]]

    def _rcs_table(self, temperature, cache_dir):
        """DAFormer-style rare-class sampling: P(c) ∝ exp((1 − f_c) / T) over source pixel frequencies."""
        cache = cache_dir / "rcs_stats.json" if cache_dir else None
        fp = self.source.fingerprint()
        stats = json.loads(cache.read_text()) if cache and cache.is_file() else None
        if not stats or stats.get("fingerprint") != fp:
            pixels, members = np.zeros(256, np.int64), {}
            for k in self.keys:
                counts = np.bincount(self.source.label(k).ravel(), minlength=256)
                pixels += counts
                for c in np.nonzero(counts[:IGNORE])[0]:
                    members.setdefault(str(int(c)), []).append(k)
            stats = {"fingerprint": fp, "pixels": pixels[:IGNORE].tolist(), "members": members}
            if cache:
                cache.write_text(json.dumps(stats))
        classes = sorted(int(c) for c in stats["members"])
        freq = np.array([stats["pixels"][c] for c in classes], np.float64)
        freq /= freq.sum()
        p = np.exp((1 - freq) / temperature)
        return p / p.sum(), [stats["members"][str(c)] for c in classes]

    # -- one sample ---------------------------------------------------------------------------
    def __getitem__(self, pos: int) -> dict:
        rng = item_rng(self.seed, "sample", pos)
        key = self.key_at(pos)
        src, lbl = self._loaded(("src", key), lambda: (to_tensor(self.source.image(key)),
                                                       torch.from_numpy(self.source.label(key).astype(np.int64))),
                                self.aug.resize)
        images = [src]
        if self.synth:
            i = int(rng.integers(len(self.synth)))
            images += self._loaded(("syn", i, key), lambda: (to_tensor(self.synth[i].image(key)),), src.shape[-2:])
        images, (lbl,) = self._crop_flip(rng, images, [lbl])
        out = {"src": self._finish(images[0], rng), "lbl": lbl}
        if self.synth:
            out["syn"] = self._finish(images[1], rng)
        if self.target is not None:
            tkeys = self.target.keys()
            tkey = tkeys[int(rng.integers(len(tkeys)))]
            tgt, *extra = self._loaded(("tgt", tkey), lambda: self._target_tensors(tkey), self.aug.resize)
            (tgt,), extra = self._crop_flip(rng, [tgt], extra)
            out["tgt"] = self._finish(tgt, rng)
            if self.pseudo is not None:
                pl, conf = extra
                out["pl"] = pl
                # DACS-style weight: the share of pixels whose confidence passes the threshold.
                out["pl_w"] = (conf >= self.pl_threshold).float().mean()
        return out

    def _target_tensors(self, key) -> list[torch.Tensor]:
        """The target image and, with pseudo-labels, its labels and their confidences."""
        out = [to_tensor(self.target.image(key))]
        if self.pseudo is not None:
            out += [torch.from_numpy(self.pseudo.get("preds", key).astype(np.int64)),
                    torch.from_numpy(self.pseudo.get("confidence", key).astype(np.float32))]
        return out

    def _loaded(self, what: tuple, read, size=None) -> list[torch.Tensor]:
        """``read()``'s tensors (an image (3, H, W), then maps (H, W): int64 labels or float
        confidences), resized to ``size`` (None: as they are). Kept in memory while the ``cache_mb``
        budget lasts: decoding and resizing are about 40 % of a data worker's time on small
        images. Cached or not, the values are the same."""
        hit = self._cache.get(what)
        if hit is None:
            hit = [t if size is None else _resize(t, size) for t in read()]
            nbytes = sum(t.element_size() * t.nelement() for t in hit)
            if nbytes <= self._cache_left:
                self._cache[what], self._cache_left = hit, self._cache_left - nbytes
        return [t.clone() for t in hit]

    def _crop_flip(self, rng, images, labels):
        if self.aug.crop:
            y0, x0, ch, cw = crop_box(rng, images[0].shape[-2:], self.aug.crop)
            images = [im[:, y0:y0 + ch, x0:x0 + cw] for im in images]
            labels = [lb[..., y0:y0 + ch, x0:x0 + cw] for lb in labels]
        if self.aug.flip and rng.random() < 0.5:
            images = [im.flip(-1) for im in images]
            labels = [lb.flip(-1) for lb in labels]
        return images, labels

    def _finish(self, img, rng):
        if self.aug.jitter:
            img = color_jitter(img, rng)
        if self.aug.photometric:
            img = photometric(img, rng)
        return normalize(img.contiguous())


def _resize(t: torch.Tensor, size) -> torch.Tensor:
    if t.dim() == 3:
        return resize_image(t, size)
    return resize_label(t, size) if t.dtype == torch.int64 else resize_image(t[None], size)[0]


class PositionSampler(torch.utils.data.Sampler):
    """Global positions ``start + rank, start + rank + world, ...`` for ``count`` samples per rank."""

    def __init__(self, start: int, count: int, rank: int = 0, world: int = 1):
        self.start, self.count, self.rank, self.world = start, count, rank, world

    def __iter__(self):
        return iter(range(self.start + self.rank, self.start + self.rank + self.count * self.world, self.world))

    def __len__(self):
        return self.count


class FeatureSet(TrainSet):
    """Cached diffusion features (an extract-features artifact) paired by key with a labelled
    source dataset: ``dataset[pos]`` -> ``{"src": {"s8": (C, h, w), ...}, "lbl": (H, W)}``."""

    def __init__(self, source, features, seed: int):
        super().__init__(source, Augment(flip=False, jitter=False), seed)
        self.features = features
        self.fields = [f for f in features.fields if f.startswith("features/")]
        if not self.fields:
            raise InputError(f"{features.path} holds no features/* fields", "pass an artifact from 'zodi extract-features'")
        have = set(features.keys)
        missing = [k for k in self.keys if k not in have]
        if missing:
            raise InputError(f"{len(missing)} of {len(self.keys)} source images have no cached features in {features.path}, "
                             f"e.g. {missing[0]!r}", "extract features for the whole source split")
        check_feature_sizes(features, self.fields, self.keys[0], source.label(self.keys[0]).shape)

    def __getitem__(self, pos: int) -> dict:
        key = self.key_at(pos)
        feats = {f.split("/")[1]: torch.from_numpy(self.features.get(f, key).astype(np.float32)) for f in self.fields}
        return {"src": feats, "lbl": torch.from_numpy(self.source.label(key).astype(np.int64))}


def check_feature_sizes(features, fields, key, label_hw) -> None:
    """Every cached map must have its label's aspect ratio (up to the processing size's rounding)."""
    for f in fields:
        h, w = features.get(f, key).shape[-2:]
        if abs((w / h) / (label_hw[1] / label_hw[0]) - 1) > 0.1:
            raise InputError(f"{f} of {key!r} is {w}x{h}, not the aspect ratio of its label {label_hw[1]}x{label_hw[0]}",
                             "extract features from the same images as the labels")
