"""Scores: hand-computed confusion matrices, subsets, remaps, and the official evaluator."""
from __future__ import annotations

import math

import numpy as np
import pytest

from zodicli.data import classsets
from zodicli.errors import InputError
from zodicli.metrics.confusion import ConfusionMatrix

NAMES = ("a", "b", "c")


def test_hand_computed_three_class_matrix():
    gt = np.array([[0, 0, 1, 1],
                   [2, 2, 255, 1]], np.uint8)
    pr = np.array([[0, 1, 1, 255],
                   [2, 0, 0, 1]], np.uint8)
    cm = ConfusionMatrix(3)
    cm.update(pr, gt)
    # rows: gt a, b, c; columns: pred a, b, c, ignore. The gt-ignore pixel counts nowhere.
    assert cm.counts.tolist() == [[1, 1, 0, 0],
                                  [0, 2, 0, 1],
                                  [1, 0, 1, 0]]
    s = cm.scores(NAMES)
    # a: tp 1, fp 1 (c->a), fn 1 -> 1/3; b: tp 2, fp 1, fn 1 -> 2/4; c: tp 1, fp 0, fn 1 -> 1/2
    assert s["iou"] == pytest.approx({"a": 100 / 3, "b": 50.0, "c": 50.0})           # percent, as mIoU
    assert s["miou"] == pytest.approx((1 / 3 + 0.5 + 0.5) / 3 * 100)
    assert s["pixel_acc"] == pytest.approx(4 / 7 * 100)
    assert s["mean_acc"] == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3 * 100)
    assert s["n_pixels"] == 7


def test_accumulates_over_images_not_mean_of_images():
    cm = ConfusionMatrix(2)
    cm.update(np.array([[0, 0, 0, 0]], np.uint8), np.array([[0, 0, 0, 0]], np.uint8))   # a perfect
    cm.update(np.array([[1]], np.uint8), np.array([[0]], np.uint8))                     # one miss
    # dataset-level: a tp 4 fn 1 -> 0.8; b: tp 0 fp 1 -> 0. Per-image mean would differ.
    assert cm.scores(("a", "b"))["iou"] == pytest.approx({"a": 80.0, "b": 0.0})


def test_absent_classes_are_nan_and_skipped():
    cm = ConfusionMatrix(3)
    cm.update(np.array([[0, 1]], np.uint8), np.array([[0, 1]], np.uint8))
    s = cm.scores(NAMES)
    assert math.isnan(s["iou"]["c"]) and s["miou"] == pytest.approx(100.0)


def test_size_mismatch_is_an_error():
    with pytest.raises(InputError, match="differ in size for 'k1'.*full ground-truth resolution"):
        ConfusionMatrix(3).update(np.zeros((4, 5), np.uint8), np.zeros((4, 6), np.uint8), key="k1")


def test_synthia_subsets_score_the_19_class_matrix_directly():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 19, (50, 60)).astype(np.uint8)
    pr = np.where(rng.random((50, 60)) < 0.6, gt, rng.integers(0, 19, (50, 60))).astype(np.uint8)
    cm = ConfusionMatrix(19)
    cm.update(pr, gt)
    names = classsets.load("cityscapes19").names
    full = cm.scores(names)
    s16 = cm.scores(names, classsets.load("synthia16").eval_ids)
    s13 = cm.scores(names, classsets.load("synthia13").eval_ids)
    assert len(s16["iou"]) == 16 and "terrain" not in s16["iou"] and "truck" not in s16["iou"] and "train" not in s16["iou"]
    assert len(s13["iou"]) == 13 and not {"wall", "fence", "pole"} & set(s13["iou"])
    expect16 = np.mean([full["iou"][n] for n in s16["iou"]])
    assert s16["miou"] == pytest.approx(expect16) and s16["miou"] != pytest.approx(full["miou"] * 19 / 16)


def test_class_tables():
    c19 = classsets.load("cityscapes19")
    assert c19.num_classes == 19 and c19.names[13] == "car" and c19.colors[0].tolist() == [128, 64, 128]
    lut = classsets.label_id_to_train_id()
    assert [lut[i] for i in (7, 8, 11, 17, 23, 26, 33)] == [0, 1, 2, 5, 10, 13, 18]
    assert lut[0] == lut[1] == lut[6] == lut[9] == lut[34] == 255
    # ADE20K palette entries (SceneParse150 order) that ControlNet-seg expects.
    names, pal = classsets.ade20k_palette()
    assert len(names) == 150 and pal[names.index("road")].tolist() == [140, 140, 140]
    ade = classsets.cityscapes_to_ade20k_colors()
    assert ade[0].tolist() == [140, 140, 140]      # road
    assert ade[2].tolist() == [180, 120, 120]      # building
    assert ade[8].tolist() == [4, 200, 3]          # vegetation -> tree
    assert ade[10].tolist() == [6, 230, 230]       # sky
    assert ade[11].tolist() == ade[12].tolist() == [150, 5, 61]   # person, rider -> person
    assert ade[13].tolist() == [0, 102, 200]       # car
    madm = classsets.load("madm11")
    assert madm.num_classes == 11 and madm.remap[c19.names.index("sky")] == 0 and madm.remap[255] == 255
    assert madm.names[madm.remap[c19.names.index("road")]] == "road"


def test_matches_official_cityscapes_evaluator(tmp_path, monkeypatch):
    """Random label-id maps (void ids included) scored by cityscapesscripts and by zodi: equal to 1e-6."""
    from zodicli.data.images import write_png
    from zodicli.pipeline.evaluate import evaluate

    gt_dir = tmp_path / "cityscapes"
    pred_dir = tmp_path / "preds"
    rng = np.random.default_rng(7)
    gts, preds = [], []
    for i in range(6):
        h, w = 40 + 8 * i, 64
        gt = rng.integers(0, 34, (h, w)).astype(np.uint8)
        pr = np.where(rng.random((h, w)) < 0.5, gt, rng.integers(0, 34, (h, w))).astype(np.uint8)
        stem = f"city_{i:06d}_000019"
        write_png(gt_dir / "leftImg8bit/val/city" / f"{stem}_leftImg8bit.png", np.zeros((h, w, 3), np.uint8))
        write_png(gt_dir / "gtFine/val/city" / f"{stem}_gtFine_labelIds.png", gt)
        write_png(pred_dir / f"{stem}_pred.png", pr)
        gts.append(str(gt_dir / "gtFine/val/city" / f"{stem}_gtFine_labelIds.png"))
        preds.append(str(pred_dir / f"{stem}_pred.png"))

    monkeypatch.setenv("CITYSCAPES_DATASET", str(gt_dir))
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    args = official.args
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    ref = official.evaluateImgLists(preds, gts, args)

    ours = evaluate(str(pred_dir), "cityscapes:val", pred_encoding="labelid", data_root=tmp_path)
    for name, iou in ours["iou"].items():
        assert iou / 100 == pytest.approx(ref["classScores"][name], abs=1e-6), name
    assert ours["miou"] / 100 == pytest.approx(ref["averageScoreClasses"], abs=1e-6)
