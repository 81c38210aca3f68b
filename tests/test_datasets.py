"""Dataset readers on hand-made layouts, the registry's errors, and the toy city."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from zodicli.data import classsets
from zodicli.data.images import write_png
from zodicli.data.registry import open_dataset
from zodicli.errors import InputError

LABEL_IDS = np.array([[7, 8, 11, 0], [26, 33, 1, 23]], np.uint8)
TRAIN_IDS = [[0, 1, 2, 255], [13, 18, 255, 10]]


def img(v=10):
    return np.full((2, 4, 3), v, np.uint8)


def test_cityscapes_reader(tmp_path):
    root = tmp_path / "cityscapes"
    for city, frame in (("b", 2), ("a", 1)):
        write_png(root / f"leftImg8bit/val/{city}/{city}_000000_00000{frame}_leftImg8bit.png", img(frame))
        write_png(root / f"gtFine/val/{city}/{city}_000000_00000{frame}_gtFine_labelIds.png", LABEL_IDS)
    ds = open_dataset("cs:val", data_root=tmp_path)
    assert ds.keys() == ["a_000000_000001", "b_000000_000002"]
    assert ds.image("b_000000_000002")[0, 0].tolist() == [2, 2, 2]
    assert ds.label("a_000000_000001").tolist() == TRAIN_IDS and ds.label("a_000000_000001").dtype == np.uint8


def test_acdc_and_darkzurich_readers(tmp_path):
    write_png(tmp_path / "acdc/rgb_anon/fog/val/GOPR1/GOPR1_frame_000001_rgb_anon.png", img())
    write_png(tmp_path / "acdc/gt/fog/val/GOPR1/GOPR1_frame_000001_gt_labelIds.png", LABEL_IDS)
    ds = open_dataset("acdc:fog:val", data_root=tmp_path)
    assert ds.keys() == ["GOPR1_frame_000001"] and ds.label("GOPR1_frame_000001").tolist() == TRAIN_IDS
    write_png(tmp_path / "dark_zurich/rgb_anon/val/night/GOPR9/GOPR9_frame_000003_rgb_anon.png", img())
    write_png(tmp_path / "dark_zurich/gt/val/night/GOPR9/GOPR9_frame_000003_gt_labelIds.png", LABEL_IDS)
    dz = open_dataset("darkzurich:val", data_root=tmp_path)
    assert dz.label("GOPR9_frame_000003").tolist() == TRAIN_IDS


def test_gta5_with_split_file(tmp_path, monkeypatch):
    root = tmp_path / "elsewhere"
    for i in (3, 1, 2):
        write_png(root / f"images/{i:05d}.png", img(i))
        write_png(root / f"labels/{i:05d}.png", LABEL_IDS)
    (root / "val.txt").write_text("00002.png\n00003\n")
    monkeypatch.setenv("ZODI_GTA5_ROOT", str(root))          # per-dataset override
    assert open_dataset("gta").keys() == ["00001", "00002", "00003"]
    assert open_dataset("gta5:val").keys() == ["00002", "00003"]
    with pytest.raises(InputError, match="split file test.txt"):
        open_dataset("gta:test")


def test_synthia_16bit_labels(tmp_path):
    import png

    root = tmp_path / "synthia"
    write_png(root / "RGB/0000001.png", img())
    lab = np.zeros((2, 4, 3), np.uint16)
    lab[..., 0] = [[3, 4, 2, 16], [8, 11, 0, 1]]       # road sidewalk building terrain / car bicycle void sky
    lab[..., 1] = 1234                                  # instance ids in the other channel
    (root / "GT/LABELS").mkdir(parents=True)
    png.from_array(lab.reshape(2, -1), "RGB;16").save(str(root / "GT/LABELS/0000001.png"))
    ds = open_dataset("synthia", data_root=tmp_path)
    assert ds.label("0000001").tolist() == [[0, 1, 2, 9], [13, 18, 255, 10]]


def test_folder_encodings_and_h5(tmp_path):
    write_png(tmp_path / "imgs/x_leftImg8bit.png", img())
    write_png(tmp_path / "tid/x.png", np.array(TRAIN_IDS, np.uint8))
    write_png(tmp_path / "lid/x_gtFine_labelIds.png", LABEL_IDS)
    write_png(tmp_path / "col/x.png", classsets.load("cityscapes19").colorize(np.array(TRAIN_IDS, np.uint8)))
    for enc, folder in (("trainid", "tid"), ("labelid", "lid"), ("color", "col")):
        ds = open_dataset(f"folder:{tmp_path / 'imgs'}:{tmp_path / folder}:{enc}")
        assert ds.keys() == ["x"] and ds.label("x").tolist() == TRAIN_IDS, enc
    with pytest.raises(InputError, match="have no label in"):
        write_png(tmp_path / "imgs/y.png", img())
        open_dataset(f"folder:{tmp_path / 'imgs'}:{tmp_path / 'tid'}")
    from zodicli.store import ArtifactWriter

    with ArtifactWriter(tmp_path / "t.h5", "translate", {}, {}, ["k"]) as w:
        w.write(["k"], {"images": [img(5)], "labels": [np.array(TRAIN_IDS, np.uint8)]})
    ds = open_dataset(f"h5:{tmp_path / 't.h5'}")
    assert ds.image("k")[0, 0].tolist() == [5, 5, 5] and ds.label("k").tolist() == TRAIN_IDS


def test_missing_roots_name_the_layout(tmp_path):
    for spec, layout in (("cs:val", "cityscapes/leftImg8bit/<split>/<city>"), ("acdc:night:val", "acdc/rgb_anon/<cond>"),
                         ("gta5", "gta5/images/NNNNN.png"), ("synthia", "synthia/GT/LABELS"), ("darkzurich", "dark_zurich/rgb_anon")):
        with pytest.raises(InputError, match="root folder does not exist") as e:
            open_dataset(spec, data_root=tmp_path)
        assert layout in str(e.value), spec
    (tmp_path / "cityscapes/leftImg8bit/val").mkdir(parents=True)
    with pytest.raises(InputError, match="no images match"):
        open_dataset("cityscapes:val", data_root=tmp_path)


def test_toy_city_is_deterministic_with_many_classes(tmp_path, toy_root):
    from zodicli.data.toy import make_toy

    make_toy(tmp_path / "again", n_train=8, n_val=4, seed=0)
    for rel in ("cityscapes/leftImg8bit/val/toyville/toyville_000001_000002_leftImg8bit.png",
                "acdc/gt/night/train/GOPR0200/GOPR0200_frame_000005_gt_labelIds.png"):
        assert (tmp_path / "again" / rel).read_bytes() == (toy_root / rel).read_bytes()
    make_toy(tmp_path / "some", n_train=8, n_val=4, seed=0, conditions=("clear", "snow"))   # fewer conditions: same images
    for rel in ("acdc/rgb_anon/snow/val/GOPR0401/GOPR0401_frame_000003_rgb_anon.png",
                "cityscapes/gtFine/train/toytown/toytown_000000_000007_gtFine_labelIds.png"):
        assert (tmp_path / "some" / rel).read_bytes() == (toy_root / rel).read_bytes()
    assert not (tmp_path / "some/acdc/rgb_anon/fog").exists()
    with pytest.raises(InputError, match="unknown toy condition 'hail'"):
        make_toy(tmp_path / "bad", conditions=("clear", "hail"))
    ds = open_dataset("cs:train", data_root=toy_root)        # the real reader on the toy layout
    present = set()
    for k in ds.keys():
        present |= set(np.unique(ds.label(k)).tolist())
    assert len(present - {255}) >= 10
    assert ds.image(ds.keys()[0]).shape == (128, 256, 3)


def test_toy_weather_hurts_a_clear_trained_segmenter(toy_env):
    """The pixel-colour baseline fitted on clear scenes must lose most of its mIoU in every style."""
    from zodicli.metrics.confusion import ConfusionMatrix
    from zodicli.seg.pixel_baseline import PixelBaseline

    model = PixelBaseline.fit(open_dataset("toy:clear:train"))
    miou = {}
    for cond in ("clear", "fog", "night", "rain", "snow"):
        ds = open_dataset(f"toy:{cond}:val")
        cm = ConfusionMatrix(19)
        for k in ds.keys():
            cm.update(model.predict(ds.image(k))[0], ds.label(k))
        miou[cond] = cm.scores(ds.classes.names)["miou"]
    for cond in ("fog", "night", "rain", "snow"):
        assert miou[cond] < 0.75 * miou["clear"], miou


def test_union_spec_joins_datasets_and_refuses_shared_keys(toy_env):
    clear, fog = open_dataset("toy:clear:val"), open_dataset("toy:fog:val")
    both = open_dataset("toy:clear:val+toy:fog:val")
    assert both.keys() == sorted(clear.keys() + fog.keys()) and both.spec == "toy:clear:val+toy:fog:val"
    k = fog.keys()[0]
    assert np.array_equal(both.image(k), fog.image(k)) and np.array_equal(both.label(k), fog.label(k))
    with pytest.raises(InputError, match="share the key"):
        open_dataset("toy:clear:val+toy:clear:val")


def test_toy_thermal_is_a_grey_sensor_of_temperatures_that_the_default_city_lacks(tmp_path, monkeypatch):
    """The thermal condition: one channel replicated, people warmer than vegetation warmer than the
    sky, low contrast; exact labels through the folder reader; its own scenes; a city made without it
    names the command that adds it."""
    from zodicli.data.toy import PERSON, SKY, VEGETATION, make_toy

    make_toy(tmp_path / "city", n_train=6, n_val=3, seed=0, conditions=("clear", "thermal"))
    monkeypatch.setenv("ZODI_TOY_ROOT", str(tmp_path / "city"))
    ds = open_dataset("toy:thermal:train")
    assert len(ds.keys()) == 6 and len(open_dataset("toy:thermal:val").keys()) == 3
    means = {PERSON: [], VEGETATION: [], SKY: []}
    spread = []
    for k in ds.keys():
        img, ids = ds.image(k), np.array(Image.open(tmp_path / "city/thermal/train/labels" / f"{k}.png"))
        assert img.shape == (128, 256, 3) and (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
        for cls in means:
            if (ids == cls).sum() > 20:
                means[cls].append(img[..., 0][ids == cls].mean())
        spread.append(np.percentile(img, 99) - np.percentile(img, 1))
        assert set(np.unique(ds.label(k))) - {255} <= set(range(19))
    person, veg, sky = (np.mean(means[c]) for c in (PERSON, VEGETATION, SKY))
    assert person > veg + 40 and veg > sky + 20, (person, veg, sky)
    assert np.mean(spread) < 200                              # a narrow dynamic range, not the full 0..255
    clear = open_dataset("toy:clear:train")
    assert not np.array_equal(ds.label(ds.keys()[0]), clear.label(clear.keys()[0]))    # its own scenes
    make_toy(tmp_path / "plain", n_train=2, n_val=1, seed=0)
    monkeypatch.setenv("ZODI_TOY_ROOT", str(tmp_path / "plain"))
    with pytest.raises(InputError, match=r"has no thermal images.*--conditions clear,thermal"):
        open_dataset("toy:thermal:val")
