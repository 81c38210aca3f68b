"""Class sets, loaded from the YAML files in ``classes/`` (data, not code paths).

* ``cityscapes19`` — the 19 train ids, their colours, label-id -> train-id table and the
  ADE20K class each maps to for ControlNet-seg conditioning.
* ``synthia16`` / ``synthia13`` — evaluation subsets of the 19 (scored on the 19-class matrix).
* ``madm11`` / ``madm9`` — other label spaces, reached by remapping Cityscapes train ids.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import InputError

CLASS_DIR = Path(__file__).with_name("classes")
IGNORE = 255


@dataclass(frozen=True)
class ClassSet:
    """A label space. ``eval_ids`` (subsets) index the 19-class space that is scored;
    ``remap`` (other spaces) is a 256-entry table from Cityscapes train id to this set's id."""

    name: str
    names: tuple[str, ...]
    colors: np.ndarray  # (C, 3) uint8
    eval_ids: tuple[int, ...] | None = None
    remap: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def colorize(self, label: np.ndarray) -> np.ndarray:
        """(H, W) ids -> (H, W, 3) uint8 colours; ignore and unknown ids are black."""
        lut = np.zeros((256, 3), np.uint8)
        lut[: len(self.colors)] = self.colors
        return lut[label]


def available() -> list[str]:
    return sorted(p.stem for p in CLASS_DIR.glob("*.yaml") if p.stem != "ade20k150")


@lru_cache(maxsize=None)
def _yaml(name: str) -> dict:
    import yaml

    path = CLASS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise InputError(f"unknown class set '{name}'", f"choose one of: {', '.join(available())}")
    return yaml.safe_load(path.read_text())


@lru_cache(maxsize=None)
def load(name: str) -> ClassSet:
    spec = _yaml(name)
    if "subset_of" in spec:
        base = load(spec["subset_of"])
        ids = tuple(base.names.index(n) for n in spec["classes"])
        return ClassSet(base.name, base.names, base.colors, eval_ids=ids)
    if "remap_from" in spec:
        base = load(spec["remap_from"])
        remap = np.full(256, IGNORE, np.uint8)
        for new_id, c in enumerate(spec["classes"]):
            for src in c["from"]:
                remap[base.names.index(src)] = new_id
        names = tuple(c["name"] for c in spec["classes"])
        colors = np.array([c["color"] for c in spec["classes"]], np.uint8)
        return ClassSet(name, names, colors, remap=remap)
    names = tuple(c["name"] for c in spec["classes"])
    colors = np.array([c["color"] for c in spec["classes"]], np.uint8)
    return ClassSet(name, names, colors)


@lru_cache(maxsize=None)
def label_id_to_train_id() -> np.ndarray:
    """256-entry uint8 table: Cityscapes/GTA5 label id -> train id (255 = ignore)."""
    lut = np.full(256, IGNORE, np.uint8)
    for train_id, c in enumerate(_yaml("cityscapes19")["classes"]):
        lut[c["label_id"]] = train_id
    return lut


@lru_cache(maxsize=None)
def train_id_to_label_id() -> np.ndarray:
    """256-entry uint8 table: train id -> label id; ignore -> 0 (unlabeled)."""
    lut = np.zeros(256, np.uint8)
    for train_id, c in enumerate(_yaml("cityscapes19")["classes"]):
        lut[train_id] = c["label_id"]
    return lut


@lru_cache(maxsize=None)
def label_id_colors() -> np.ndarray:
    """(256, 3) colours of Cityscapes *_color.png files, indexed by label id."""
    lut = np.zeros((256, 3), np.uint8)
    spec = _yaml("cityscapes19")
    for c in spec["classes"]:
        lut[c["label_id"]] = c["color"]
    for label_id, color in spec["void_colors"].items():
        lut[int(label_id)] = color
    return lut


@lru_cache(maxsize=None)
def synthia_to_train_id() -> np.ndarray:
    names = load("cityscapes19").names
    lut = np.full(65536, IGNORE, np.uint8)
    for sid, name in _yaml("synthia16")["synthia_ids"].items():
        lut[int(sid)] = names.index(name)
    return lut


@lru_cache(maxsize=None)
def ade20k_palette() -> tuple[tuple[str, ...], np.ndarray]:
    spec = _yaml("ade20k150")
    return tuple(c["name"] for c in spec["classes"]), np.array([c["color"] for c in spec["classes"]], np.uint8)


@lru_cache(maxsize=None)
def cityscapes_to_ade20k_colors() -> np.ndarray:
    """(19, 3): the ADE20K palette colour for each Cityscapes train id (ControlNet-seg input)."""
    ade_names, ade_colors = ade20k_palette()
    return np.array([ade_colors[ade_names.index(c["ade20k"])] for c in _yaml("cityscapes19")["classes"]], np.uint8)
