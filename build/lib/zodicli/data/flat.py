"""Synthetic sources with flat folders: GTA5 (``gta5[:SPLIT]``, alias ``gta``) and SYNTHIA
(``synthia[:SPLIT]``). The split ``all`` is every image; any other split NAME reads the image
ids listed one per line in ``<root>/NAME.txt`` (e.g. a published train/val division)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from . import classsets
from .images import key_of
from .registry import FileDataset, dataset_root, decode_label_ids, missing_layout, register, scan


def _split_filter(dtype, root: Path, split: str, pairs: dict) -> dict:
    if split == "all":
        return pairs
    listing = root / f"{split}.txt"
    if not listing.is_file():
        raise missing_layout(dtype, root, f"split file {listing.name} for split {split!r} does not exist")
    wanted = [key_of(line.strip()) for line in listing.read_text().splitlines() if line.strip()]
    missing = [k for k in wanted if k not in pairs]
    if missing:
        raise InputError(f"{dtype.name}: {listing} lists {len(missing)} image(s) not found, e.g. {missing[0]!r}",
                         "check the split file against the images folder")
    return {k: pairs[k] for k in wanted}


@register("gta5", aliases=("gta",), folder="gta5", usage="gta5[:all|SPLIT]",
          layout="gta5/images/NNNNN.png and gta5/labels/NNNNN.png (Cityscapes label ids); SPLIT reads gta5/SPLIT.txt")
def gta5(args, data_root=None, dtype=None, **_):
    split = args[0] if args and args[0] else "all"
    root = dataset_root(dtype, data_root)
    pairs = scan(dtype, root, "images/*.png", lambda img: root / "labels" / img.name)
    return FileDataset(f"gta5:{split}", _split_filter(dtype, root, split, pairs), decode_label_ids)


def decode_synthia(a: np.ndarray) -> np.ndarray:
    """SYNTHIA GT/LABELS: 16-bit, class id in channel 0."""
    ids = a[..., 0] if a.ndim == 3 else a
    return classsets.synthia_to_train_id()[ids.astype(np.intp)]


class SynthiaDataset(FileDataset):
    def label(self, key):
        path = self.paths(key)[1]
        return None if path is None else decode_synthia(read_png16(path))


def read_png16(path) -> np.ndarray:
    """SYNTHIA's 16-bit multi-channel PNGs: (H, W, planes) uint16. Pillow silently keeps only the
    high byte of 16-bit RGB, which turns every class id into 0; pypng reads them exactly."""
    import png

    try:
        w, h, rows, info = png.Reader(filename=str(path)).asDirect()
        return np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(h, w, info["planes"])
    except (png.Error, OSError) as e:
        raise InputError(f"{path} is not a readable PNG ({e})", "re-extract SYNTHIA's GT/LABELS") from None


@register("synthia", folder="synthia", usage="synthia[:all|SPLIT]",
          layout="synthia/RGB/NNNNNNN.png and synthia/GT/LABELS/NNNNNNN.png (16-bit, id in channel 0)")
def synthia(args, data_root=None, dtype=None, **_):
    split = args[0] if args and args[0] else "all"
    root = dataset_root(dtype, data_root)
    pairs = scan(dtype, root, "RGB/*.png", lambda img: root / "GT" / "LABELS" / img.name)
    return SynthiaDataset(f"synthia:{split}", _split_filter(dtype, root, split, pairs), None)
