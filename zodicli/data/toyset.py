"""The toy city as a dataset: ``toy:clear|fog|night|rain|snow|thermal[:train|val]``.

Read through the real Cityscapes (clear), ACDC (other weathers) and folder (thermal) readers from
``ZODI_TOY_ROOT`` or ``<data root>/toy``; made there with default sizes on first use."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import InputError
from .registry import REGISTRY, data_root as base_root, register, split_arg
from .toy import CONDITIONS, make_toy


def toy_root(data_root=None) -> Path:
    env = os.environ.get("ZODI_TOY_ROOT")
    return Path(env) if env else base_root(data_root) / "toy"


def _make_default(root: Path) -> None:
    """Build the default city in a private folder and rename it into place, so that concurrent
    first uses (DDP ranks, array jobs) never read a half-written city."""
    import os
    import shutil

    print(f"zodi: making the toy city in {root} (first use; 'zodi datasets make-toy' sets its size)", file=sys.stderr)
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    make_toy(tmp)
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, root)
    except OSError:                     # another process got there first (or root exists): keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not (root / "toy.json").is_file():
            raise


@register("toy", folder="toy", usage="toy:clear|fog|night|rain|snow|thermal[:train|val]",
          layout="toy/toy.json, toy/cityscapes/... (clear), toy/acdc/... (fog, night, rain, snow), "
                 "toy/thermal/<split>/{images,labels}/ (thermal)")
def toy(args, data_root=None, dtype=None, **_):
    cond = split_arg(args, 0, "clear", CONDITIONS, dtype)
    split = split_arg(args, 1, "train", ("train", "val"), dtype)
    root = toy_root(data_root)
    if not (root / "toy.json").is_file():
        _make_default(root)
    if cond == "clear":
        ds = REGISTRY["cityscapes"].factory([split], dtype=REGISTRY["cityscapes"], root=root / "cityscapes")
    elif cond == "thermal":
        folder = root / "thermal" / split
        if not folder.is_dir():
            raise InputError(f"the toy city in {root} has no thermal images",
                             f"make one that has: zodi datasets make-toy --out {root} --conditions clear,thermal")
        ds = REGISTRY["folder"].factory([str(folder / "images"), str(folder / "labels"), "labelid"], dtype=REGISTRY["folder"])
    else:
        ds = REGISTRY["acdc"].factory([cond, split], dtype=REGISTRY["acdc"], root=root / "acdc")
    return ds
