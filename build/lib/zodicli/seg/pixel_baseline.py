"""A pixel-colour baseline segmenter: P(class | quantised RGB, image row band), from counts.

Not a method of any paper: the floor that the demo reports until ``train-seg`` lands, and a cheap
predictor for exercising the pipeline. It learns the clear domain's colours, so weather shifts
break it, which is the point the toy city has to make.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

BITS = 4       # per colour channel -> 16^3 = 4096 colour bins
BANDS = 8      # horizontal image bands (position prior: sky above, road below)


def _index(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) feature-bin index in [0, BANDS * 4096)."""
    h = img.shape[0]
    q = (img >> (8 - BITS)).astype(np.intp)
    colour = (q[..., 0] << (2 * BITS)) | (q[..., 1] << BITS) | q[..., 2]
    band = (np.arange(h) * BANDS // h)[:, None]
    return band * (1 << (3 * BITS)) + colour


@dataclass
class PixelBaseline:
    counts: np.ndarray          # (BANDS * 4096, C) int64
    train_spec: str = ""

    @classmethod
    def fit(cls, dataset, num_classes: int = 19, keys=None) -> "PixelBaseline":
        counts = np.zeros((BANDS << (3 * BITS), num_classes), np.int64)
        for k in keys or dataset.keys():
            lbl = dataset.label(k)
            if lbl is None:
                raise InputError(f"{dataset.spec} has no labels to fit on", "fit on a labelled split")
            idx = _index(dataset.image(k))
            valid = lbl < num_classes
            flat = idx[valid] * num_classes + lbl[valid]
            counts += np.bincount(flat, minlength=counts.size).reshape(counts.shape)
        return cls(counts, dataset.spec)

    def _table(self):
        # Unseen colour bins fall back to the band's class prior.
        c = self.counts.astype(np.float64)
        band_prior = c.reshape(BANDS, -1, c.shape[1]).sum(1)
        prior = np.repeat(band_prior / np.maximum(band_prior.sum(1, keepdims=True), 1), 1 << (3 * BITS), axis=0)
        score = c + 0.5 * prior
        total = score.sum(1)
        return score.argmax(1).astype(np.uint8), (score.max(1) / np.maximum(total, 1e-9)).astype(np.float16)

    def predict(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 -> preds (H, W) uint8 train ids, confidence (H, W) float16."""
        if not hasattr(self, "_lut"):
            self._lut = self._table()
        idx = _index(img)
        return self._lut[0][idx], self._lut[1][idx]

    def save(self, path) -> None:
        from ..store.files import atomic_path

        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, counts=self.counts, train_spec=self.train_spec, bits=BITS, bands=BANDS)

    @classmethod
    def load(cls, path) -> "PixelBaseline":
        p = Path(path)
        if not p.is_file():
            raise InputError(f"baseline model {p} does not exist", "make it with 'zodi baseline fit'")
        try:
            z = np.load(p)
            if int(z["bits"]) != BITS or int(z["bands"]) != BANDS:
                raise InputError(f"{p} was saved with other bins", "re-fit it with this version")
            return cls(z["counts"], str(z["train_spec"]))
        except (OSError, KeyError, ValueError) as e:
            raise InputError(f"{p} is not a zodi baseline model ({type(e).__name__})", "re-fit it with 'zodi baseline fit'") from None

    def fingerprint(self) -> str:
        return hashlib.sha256(self.counts.tobytes()).hexdigest()[:16]
