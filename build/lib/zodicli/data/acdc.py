"""ACDC (``acdc:COND[:SPLIT]``) and Dark Zurich (``darkzurich[:SPLIT]``): ETH's adverse-condition
sets, sharing the ``rgb_anon`` / ``gt`` layout and Cityscapes label ids."""
from __future__ import annotations

from .registry import FileDataset, dataset_root, decode_label_ids, register, scan, split_arg

CONDITIONS = ("fog", "night", "rain", "snow")


@register("acdc", folder="acdc", usage="acdc:fog|night|rain|snow[:train|val|test]",
          layout="acdc/rgb_anon/<cond>/<split>/<seq>/<name>_rgb_anon.png and "
                 "acdc/gt/<cond>/<split>/<seq>/<name>_gt_labelIds.png")
def acdc(args, data_root=None, dtype=None, root=None, **_):
    cond = split_arg(args, 0, "", CONDITIONS, dtype)
    split = split_arg(args, 1, "train", ("train", "val", "test"), dtype)
    root = root or dataset_root(dtype, data_root)

    def label_of(img):
        if split == "test":
            return None
        return root / "gt" / cond / split / img.parent.name / img.name.replace("_rgb_anon.png", "_gt_labelIds.png")

    pairs = scan(dtype, root, f"rgb_anon/{cond}/{split}/*/*_rgb_anon.png", label_of)
    return FileDataset(f"acdc:{cond}:{split}", pairs, decode_label_ids)


@register("darkzurich", aliases=("dz",), folder="dark_zurich", usage="darkzurich[:train|val]",
          layout="dark_zurich/rgb_anon/<split>/<time>/<seq>/<name>_rgb_anon.png and "
                 "dark_zurich/gt/val/<time>/<seq>/<name>_gt_labelIds.png (labels for val only)")
def darkzurich(args, data_root=None, dtype=None, **_):
    split = split_arg(args, 0, "val", ("train", "val"), dtype)
    root = dataset_root(dtype, data_root)

    def label_of(img):
        rel = img.relative_to(root / "rgb_anon" / split)
        return root / "gt" / split / rel.parent / img.name.replace("_rgb_anon.png", "_gt_labelIds.png")

    pairs = scan(dtype, root, f"rgb_anon/{split}/**/*_rgb_anon.png", label_of, require_labels=split == "val")
    return FileDataset(f"darkzurich:{split}", pairs, decode_label_ids)
