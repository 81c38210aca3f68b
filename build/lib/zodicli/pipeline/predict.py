"""Segment a dataset with a train-seg checkpoint into a ``preds`` artifact (per-item, resumable,
shardable). ``evaluate --checkpoint`` scores the result; ``pseudolabel`` builds on it."""
from __future__ import annotations

from pathlib import Path

from ..data.registry import open_dataset
from ..errors import InputError
from ..store.fingerprint import file_fingerprint
from .loop import run_per_item


def default_out(checkpoint, dataset: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-." else "-" for c in dataset)
    return Path(checkpoint).with_name(f"{Path(checkpoint).stem}.preds-{safe}.h5")


def predict(checkpoint, src: str, out, *, size=None, window=None, stride=None, flip=False, scales=(1.0,), batch_size=1,
            device="auto", amp="none", shard=None, overwrite=False, data_root=None, allow_partial=False,
            settings: dict | None = None, save_probs: bool = False, command: str = "predict", features=None,
            dplg_t: int | None = None) -> dict:
    """Write ``preds`` (H, W) uint8 train ids and ``confidence`` (H, W) float16 (the top softmax
    probability) for every item of ``src``; with ``save_probs`` also ``probs`` (C, H, W) float16."""
    from ..runtime import amp_dtype, choose_device
    from ..seg.checkpoint import model_from_checkpoint
    from ..seg.infer import Predictor

    dev = choose_device(device)
    model, state = model_from_checkpoint(checkpoint, dev)
    if dplg_t is not None:
        if not hasattr(model, "set_dplg_timestep"):
            raise InputError(f"--dplg needs a diffusion-backbone checkpoint; {checkpoint} holds a {state['model_config']['name']}",
                             "train one with 'zodi train-seg --backbone sd-unet'")
        model.set_dplg_timestep(dplg_t)
    ds = open_dataset(src, data_root=data_root, allow_partial=allow_partial)
    predictor = Predictor(model, dev, size=size, window=window, stride=stride, flip=flip, amp=amp_dtype(amp),
                          scales=tuple(scales))
    if state["model_config"]["name"] == "diff_fusion":       # a head on cached diffusion features
        from ..seg.infer import FeaturePredictor
        from ..store import Artifact

        if not features:
            raise InputError(f"{checkpoint} segments cached diffusion features", "pass --features h5:FILE (zodi extract-features)")
        feats = Artifact(str(features).removeprefix("h5:"), allow_partial=allow_partial)
        have = set(feats.keys)
        missing = [k for k in ds.keys() if k not in have]
        if missing:
            raise InputError(f"{len(missing)} images of {src} have no cached features, e.g. {missing[0]!r}",
                             "extract features for the whole split")
        predictor = _FeatureAdapter(FeaturePredictor(model, dev, feats), ds)

    def work(keys):
        if isinstance(predictor, _FeatureAdapter):
            return predictor.work(keys, save_probs)
        images = [ds.image(k) for k in keys]
        out = {"preds": [None] * len(keys), "confidence": [None] * len(keys)}
        if save_probs:
            out["probs"] = [None] * len(keys)
        by_shape: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            by_shape.setdefault(im.shape, []).append(i)
        for idx in by_shape.values():          # batch only images of the same size
            probs = predictor.probs([images[i] for i in idx])
            conf, pred = probs.max(1)
            for j, i in enumerate(idx):
                out["preds"][i] = pred[j].cpu().numpy().astype("uint8")
                out["confidence"][i] = conf[j].cpu().numpy().astype("float16")
                if save_probs:
                    out["probs"][i] = probs[j].cpu().numpy().astype("float16")
        return out

    settings = settings or {"checkpoint": str(checkpoint), "src": src, "size": size, "window": window,
                            "stride": stride, "flip": flip, "amp": amp}
    inputs = {"src": ds.fingerprint(), "checkpoint": file_fingerprint(checkpoint)}
    return run_per_item(out, command, settings, inputs, ds.keys(), work, batch_size=batch_size,
                        shard=shard, overwrite=overwrite)


class _FeatureAdapter:
    """Per-item work for a feature-backbone checkpoint: logits at each item's full resolution."""

    def __init__(self, predictor, ds):
        self.predictor, self.ds = predictor, ds

    def work(self, keys, save_probs):
        out = {"preds": [], "confidence": []} | ({"probs": []} if save_probs else {})
        for k in keys:
            size = self.ds.label(k).shape if self.ds.has_labels else self.ds.image(k).shape[:2]
            probs = self.predictor.probs([k], size)
            conf, pred = probs.max(1)
            out["preds"].append(pred[0].cpu().numpy().astype("uint8"))
            out["confidence"].append(conf[0].cpu().numpy().astype("float16"))
            if save_probs:
                out["probs"].append(probs[0].cpu().numpy().astype("float16"))
        return out
