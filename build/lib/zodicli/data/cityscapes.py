"""Cityscapes: ``cityscapes[:SPLIT]`` (alias ``cs``), split train|val|test (default train)."""
from __future__ import annotations

from .registry import FileDataset, dataset_root, decode_label_ids, register, scan, split_arg


@register("cityscapes", aliases=("cs",), folder="cityscapes", usage="cityscapes[:train|val|test]",
          layout="cityscapes/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png and "
                 "cityscapes/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png")
def cityscapes(args, data_root=None, dtype=None, root=None, **_):
    split = split_arg(args, 0, "train", ("train", "val", "test"), dtype)
    root = root or dataset_root(dtype, data_root)

    def label_of(img):
        if split == "test":
            return None
        return root / "gtFine" / split / img.parent.name / img.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")

    pairs = scan(dtype, root, f"leftImg8bit/{split}/*/*_leftImg8bit.png", label_of)
    return FileDataset(f"cityscapes:{split}", pairs, decode_label_ids)
