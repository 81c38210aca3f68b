"""PNG reading and writing (Pillow), and the key naming shared by all datasets."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import InputError, one_line
from ..store.files import atomic_path

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


@contextmanager
def _open(path):
    """An image, decoded in full; any decoding fault becomes one line naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            yield im
    except FileNotFoundError:
        raise InputError(f"file {path} does not exist", "check the dataset root") from None
    except Image.DecompressionBombError as e:
        raise InputError(f"{path} is too large to decode safely ({e})", "check the file; real dataset images "
                         "are far below Pillow's limit") from None
    except (OSError, SyntaxError, ValueError) as e:     # truncated, corrupt or foreign files
        raise InputError(f"{path} is not a readable image ({one_line(str(e))})", "re-extract or replace the file") from None


def read_rgb(path) -> np.ndarray:
    """(H, W, 3) uint8. Single-channel images are replicated to three channels; 16-bit ones (a common
    infrared format) are scaled to 8 bits over their full range: round(v / 257)."""
    with _open(path) as im:
        if im.mode.startswith("I"):
            a = np.asarray(im)
            if a.min(initial=0) < 0 or a.max(initial=0) > 65535:
                raise InputError(f"{path} holds 32-bit integer pixels ({int(a.min())}..{int(a.max())})",
                                 "convert it to an 8- or 16-bit image")
            g = np.rint(a.astype(np.float64) / 257).astype(np.uint8)
            return np.repeat(g[..., None], 3, axis=2)
        if im.mode == "F":
            raise InputError(f"{path} holds floating-point pixels", "convert it to an 8- or 16-bit image")
        return np.asarray(im.convert("RGB"))


def read_label(path, hint: str = "pass single-channel label-id or train-id PNGs (RGB colour labels: "
                                  "folder:IMAGES:LABELS:color)") -> np.ndarray:
    """(H, W) integer ids, as stored (8- or 16-bit single channel, palette indices kept)."""
    with _open(path) as im:
        a = np.asarray(im)
    if a.ndim == 3:
        raise InputError(f"label file {path} has {a.shape[2]} channels, expected one", hint)
    return a


def write_png(path, array: np.ndarray) -> None:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")
