"""Inference of a segmentation model on full images: whole image (optionally resized) or sliding
window, optional horizontal flip; logits are upsampled to the input resolution before argmax."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .augment import normalize, to_tensor


@dataclass
class Predictor:
    model: torch.nn.Module
    device: torch.device
    size: tuple[int, int] | None = None       # resize the input to (H, W); logits go back to full size
    window: tuple[int, int] | None = None     # sliding-window crop (H, W)
    stride: tuple[int, int] | None = None
    flip: bool = False
    amp: torch.dtype | None = None
    scales: tuple[float, ...] = (1.0,)          # multi-scale: probabilities averaged over input scales

    @torch.no_grad()
    def probs(self, images: list[np.ndarray]) -> torch.Tensor:
        """Same-sized (H, W, 3) uint8 images -> (N, C, H, W) softmax probabilities (float32)."""
        x = torch.stack([normalize(to_tensor(im)) for im in images]).to(self.device)
        h, w = x.shape[-2:]
        base = self.size or (h, w)
        total = None
        for scale in self.scales:
            size = (max(8, round(base[0] * scale)), max(8, round(base[1] * scale)))
            xs = x if size == (h, w) else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            logits = self._windows(xs) if self.window else self._forward(xs)
            p = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False).softmax(1)
            total = p if total is None else total + p
        return total / len(self.scales)

    def predict(self, images: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """-> per image: preds (H, W) uint8 train ids, confidence (H, W) float16 (max probability)."""
        p = self.probs(images)
        conf, pred = p.max(1)
        return [a.astype(np.uint8) for a in pred.cpu().numpy()], [c.astype(np.float16) for c in conf.cpu().numpy()]

    def _forward(self, x):
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            out = self.model(x)["logits"].float()
            if self.flip:
                out = out + self.model(x.flip(-1))["logits"].float().flip(-1)
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def _windows(self, x):
        wh, ww = self.window
        sh, sw = self.stride or (wh * 2 // 3, ww * 2 // 3)
        h, w = x.shape[-2:]
        ph, pw = max(wh - h, 0), max(ww - w, 0)
        x = F.pad(x, (0, pw, 0, ph))
        H, W = x.shape[-2:]
        acc, hits = None, torch.zeros(1, 1, H, W, device=x.device)
        ys = list(range(0, max(H - wh, 0) + 1, sh))
        xs = list(range(0, max(W - ww, 0) + 1, sw))
        ys += [H - wh] if ys[-1] != H - wh else []
        xs += [W - ww] if xs[-1] != W - ww else []
        for y0 in ys:
            for x0 in xs:
                out = self._forward(x[..., y0:y0 + wh, x0:x0 + ww])
                if acc is None:
                    acc = torch.zeros(x.shape[0], out.shape[1], H, W, device=x.device)
                acc[..., y0:y0 + wh, x0:x0 + ww] += out
                hits[..., y0:y0 + wh, x0:x0 + ww] += 1
        return (acc / hits)[..., :h, :w]


@dataclass
class FeaturePredictor:
    """A feature-backbone model (diff_fusion) on cached features, logits upsampled to ``size``."""

    model: torch.nn.Module
    device: torch.device
    features: object          # an Artifact from extract-features

    @torch.no_grad()
    def probs(self, keys: list[str], size) -> torch.Tensor:
        fields = [f for f in self.features.fields if f.startswith("features/")]
        batch = {f.split("/")[1]: torch.stack([torch.from_numpy(self.features.get(f, k).astype(np.float32)) for k in keys]).to(self.device)
                 for f in fields}
        logits = self.model(batch)["logits"].float()
        return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False).softmax(1)

    def predict(self, keys, size):
        conf, pred = self.probs(keys, size).max(1)
        return [a.astype(np.uint8) for a in pred.cpu().numpy()], [c.astype(np.float16) for c in conf.cpu().numpy()]
