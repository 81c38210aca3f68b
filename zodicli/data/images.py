"""PNG reading and writing (Pillow), and the key naming shared by all datasets."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError

# Suffixes stripped from file stems to get an item's key, so that an image, its label and a
# prediction file pair up: frankfurt_000000_000294_leftImg8bit.png -> frankfurt_000000_000294.
KEY_SUFFIXES = ("_leftImg8bit", "_gtFine_labelTrainIds", "_gtFine_labelIds", "_gtFine_color",
                "_gt_labelTrainIds", "_gt_labelIds", "_gt_labelColor", "_rgb_anon", "_labelTrainIds",
                "_labelIds", "_trainIds", "_pred", "_prediction")


def key_of(path: str | os.PathLike) -> str:
    stem = Path(path).name.rsplit(".", 1)[0]
    for suf in KEY_SUFFIXES:
        if stem.endswith(suf):
            return stem[: -len(suf)]
    return stem


def _open(path):
    from PIL import Image

    try:
        return Image.open(path)
    except FileNotFoundError:
        raise InputError(f"file {path} does not exist", "check the dataset root") from None
    except OSError as e:
        raise InputError(f"{path} is not a readable image ({e})", "re-extract or replace the file") from None


def read_rgb(path) -> np.ndarray:
    """(H, W, 3) uint8."""
    with _open(path) as im:
        return np.asarray(im.convert("RGB"))


def read_label(path) -> np.ndarray:
    """(H, W) integer ids, as stored (8- or 16-bit single channel, palette indices kept)."""
    with _open(path) as im:
        a = np.asarray(im)
    if a.ndim == 3:
        raise InputError(f"label file {path} has {a.shape[2]} channels, expected one",
                         "pass label-id or train-id PNGs, or use the 'color' encoding")
    return a


def write_png(path, array: np.ndarray) -> None:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")
    os.replace(tmp, path)
