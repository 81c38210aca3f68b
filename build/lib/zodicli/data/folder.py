"""Any image folder (``folder:IMAGES[:LABELS[:trainid|labelid|color]]``; a ':' or '+' inside a path
is written ``\\:`` or ``\\+``) and a zodi artifact (``h5:PATH``, its ``images`` and ``labels`` fields)
used as datasets."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from . import classsets
from .images import key_of, read_rgb
from .registry import Dataset, FileDataset, decode_label_ids, decode_train_ids, register

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def decode_colors(a: np.ndarray) -> np.ndarray:
    """Cityscapes train-id colours -> train ids; any other colour -> ignore."""
    if a.ndim != 3:
        raise InputError("the 'color' label encoding needs RGB label images", "use trainid or labelid")
    colors = classsets.load("cityscapes19").colors.astype(np.int64)
    code = (a[..., 0].astype(np.int64) << 16) | (a[..., 1].astype(np.int64) << 8) | a[..., 2]
    table = dict(zip(((colors[:, 0] << 16) | (colors[:, 1] << 8) | colors[:, 2]).tolist(), range(len(colors))))
    out = np.full(a.shape[:2], 255, np.uint8)
    for value, train_id in table.items():
        out[code == value] = train_id
    return out


DECODERS = {"trainid": decode_train_ids, "labelid": decode_label_ids, "color": decode_colors}


class ColorLabelDataset(FileDataset):
    def label(self, key):
        path = self.paths(key)[1]
        return None if path is None else decode_colors(read_rgb(path))


def _files(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() in IMAGE_EXT and p.is_file():
            k = key_of(p)
            if k in out:
                raise InputError(f"{folder}: two files share the key {k!r} ({out[k]} and {p})", "keys must be unique")
            out[k] = p
    return out


@register("folder", usage="folder:IMAGES[:LABELS[:trainid|labelid|color]]",
          layout="IMAGES/**/<key>[suffix].png|jpg and LABELS/**/<key>[suffix].png with the same keys")
def folder(args, dtype=None, **_):
    if not args or not args[0]:
        raise InputError("folder dataset needs an image folder", f"usage: {dtype.usage}")
    images = Path(args[0])
    labels = Path(args[1]) if len(args) > 1 and args[1] else None
    encoding = args[2] if len(args) > 2 and args[2] else "trainid"
    if encoding not in DECODERS:
        raise InputError(f"unknown label encoding {encoding!r} in the folder spec",
                         "choose trainid, labelid or color; a ':' inside a path is written '\\:'")
    if not images.is_dir():
        raise InputError(f"image folder {images} does not exist",
                         f"expected layout: {dtype.layout}; a ':' or '+' inside a path is written '\\:' or '\\+'")
    imgs = _files(images)
    if not imgs:
        raise InputError(f"image folder {images} holds no images", f"expected layout: {dtype.layout}")
    lbls = {}
    if labels is not None:
        if not labels.is_dir():
            raise InputError(f"label folder {labels} does not exist", f"expected layout: {dtype.layout}")
        lbls = _files(labels)
        missing = sorted(set(imgs) - set(lbls))
        if missing:
            raise InputError(f"{len(missing)} image(s) in {images} have no label in {labels}, e.g. {missing[0]!r}",
                             "labels pair with images by file name (known suffixes such as _leftImg8bit are ignored)")
    pairs = {k: (p, lbls.get(k)) for k, p in imgs.items()}
    cls = ColorLabelDataset if encoding == "color" else FileDataset
    return cls(f"folder:{images}", pairs, DECODERS[encoding])


class ArtifactDataset(Dataset):
    """A zodi artifact's ``images`` (and ``labels`` if present) as a dataset."""

    def __init__(self, path, allow_partial=False):
        from ..store import Artifact

        self.artifact = Artifact(path, allow_partial=allow_partial)
        if not self.artifact.has("images"):
            raise InputError(f"{path} has no 'images' field", "use an artifact written by translate, or a dataset")

    def keys(self):
        return self.artifact.keys

    def image(self, key):
        return self.artifact.get("images", key)

    def label(self, key):
        return self.artifact.get("labels", key) if self.artifact.has("labels") else None

    @property
    def has_labels(self):
        return self.artifact.has("labels")

    def fingerprint(self):
        return self.artifact.meta["fingerprint"]


@register("h5", usage="h5:PATH", layout="a zodi artifact with an 'images' field (and optionally 'labels')")
def h5(args, dtype=None, allow_partial=False, **_):
    if not args or not args[0]:
        raise InputError("h5 dataset needs a path", "usage: h5:PATH")
    return ArtifactDataset(args[0], allow_partial=allow_partial)
