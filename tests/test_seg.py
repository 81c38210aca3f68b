"""Segmentation models, training (resume, NaN stop, pairing, DDP) and inference from checkpoints."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zodicli.errors import ConflictError, InputError
from zodicli.seg.models import build_model, model_names

TINY = dict(model="deeplabv3plus_r18", source="toy:clear:train", crop=(64, 96), resize=None, batch_size=2,
            num_workers=0, log_every=1, lr=0.01)


@pytest.mark.parametrize("name", model_names(image_only=True))     # diff_fusion, sd_unet: test_features_pl.py
def test_every_model_forward_shapes_and_strides(name):
    torch.manual_seed(0)
    m = build_model(name, num_classes=19).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, 64, 96))
    assert out["logits"].shape == (2, 19, 16, 24)               # stride 4
    stride = 8 if name == "deeplabv3plus_tiny" else 32          # the toy-scale model keeps stride 8 by default
    assert out["features"].shape[0] == 2 and out["features"].shape[-2:] == (64 // stride, 96 // stride)


def test_output_stride_changes_the_last_stage():
    x = torch.randn(1, 3, 64, 64)
    for os_, hw in ((32, 2), (16, 4), (8, 8)):
        with torch.no_grad():
            f = build_model("deeplabv3plus_r50", output_stride=os_).eval()(x)["features"]
        assert f.shape[-1] == hw


def test_torchvision_resnet_state_dict_loads_strictly(tmp_path):
    from zodicli.seg.models.resnet import ResNet

    sd = ResNet(50).state_dict()
    for name in ("conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.num_batches_tracked",
                 "layer3.5.conv2.weight", "layer4.2.bn3.bias"):
        assert name in sd, name
    assert not any(k.startswith(("backbone", "model")) for k in sd)
    tv = {f"module.{k}": torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in sd.items()}
    tv["fc.weight"], tv["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)      # torchvision's classifier
    torch.save(tv, tmp_path / "resnet50.pth")
    m = build_model("deeplabv3plus_r50", pretrained=str(tmp_path / "resnet50.pth"))
    assert torch.all(m.backbone.layer4[2].conv3.weight == 0.5)
    torch.save(ResNet(18).state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(InputError, match=r"does not match the backbone: missing .*same ResNet depth"):
        build_model("deeplabv3plus_r50", pretrained=str(tmp_path / "resnet18.pth"))


def _cfg(tmp_path, **kw):
    from zodicli.seg.train import TrainConfig

    return TrainConfig(**{**TINY, "out": str(tmp_path / "run"), "iters": 6, "ckpt_every": 3, **kw})


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_interrupted_and_resumed_run_ends_with_identical_weights(tmp_path, toy_env, monkeypatch):
    from zodicli.seg import train as T

    T.train(_cfg(tmp_path / "a", sim_weight=None))
    real_save = T.save_checkpoint

    def crash_after_first_checkpoint(path, state):
        real_save(path, state)
        if state["iteration"] == 3:
            raise KeyboardInterrupt          # a crash right after iteration 3's checkpoint

    monkeypatch.setattr(T, "save_checkpoint", crash_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        T.train(_cfg(tmp_path / "b"))
    monkeypatch.setattr(T, "save_checkpoint", real_save)
    summary = T.train(_cfg(tmp_path / "b", num_workers=2))        # workers are a run-only setting
    assert summary["resumed"] and summary["done"] == 3
    a, b = _weights(tmp_path / "a/run/last.pt"), _weights(tmp_path / "b/run/last.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConflictError, match="other settings or data: lr: 0.01 -> 0.02"):
        T.train(_cfg(tmp_path / "b", lr=0.02))


def test_channels_last_is_the_layout_of_the_weights_and_part_of_the_settings(tmp_path, toy_env):
    from zodicli.seg.train import train

    train(_cfg(tmp_path / "nhwc", iters=2))
    train(_cfg(tmp_path / "nchw", iters=2, channels_last=False))
    a, b = _weights(tmp_path / "nhwc/run/last.pt"), _weights(tmp_path / "nchw/run/last.pt")
    conv = "backbone.conv1.weight"
    assert a[conv].is_contiguous(memory_format=torch.channels_last) and not a[conv].is_contiguous()
    assert b[conv].is_contiguous()
    # dropout draws its mask in memory order, so the two layouts train like two seeds: resuming across is refused
    assert not torch.equal(a["aspp.project.0.1.bias"], b["aspp.project.0.1.bias"])
    with pytest.raises(ConflictError, match="channels_last: True -> False"):
        train(_cfg(tmp_path / "nhwc", iters=2, channels_last=False))


def test_synthetic_pairs_must_cover_the_source(tmp_path, toy_env):
    from zodicli.data.registry import open_dataset
    from zodicli.seg.train import train
    from zodicli.store import ArtifactWriter

    src = open_dataset("toy:clear:train")
    keys = src.keys()
    with ArtifactWriter(tmp_path / "syn.h5", "translate", {}, {}, keys[1:]) as w:
        w.write(keys[1:], {"images": [src.image(k)[::-1] for k in keys[1:]], "labels": [src.label(k) for k in keys[1:]]})
    with pytest.raises(InputError, match=rf"1 of {len(keys)} source images have no translation .* e\.g\. '{keys[0]}'"):
        train(_cfg(tmp_path, synth=[str(tmp_path / "syn.h5")]))


def test_zodi_losses_run_with_synthetic_pairs_and_pseudo_labels(tmp_path, toy_env):
    """Source + synthetic + pseudo-labelled target + adversarial: every loss term is finite and logged."""
    from zodicli.data.registry import open_dataset
    from zodicli.seg.train import train
    from zodicli.store import ArtifactWriter

    src, tgt = open_dataset("toy:clear:train"), open_dataset("toy:fog:train")
    with ArtifactWriter(tmp_path / "syn.h5", "translate", {}, {}, src.keys()) as w:
        w.write(src.keys(), {"images": [255 - src.image(k) for k in src.keys()], "labels": [src.label(k) for k in src.keys()]})
    with ArtifactWriter(tmp_path / "pl.h5", "pseudolabel", {"src": "toy:fog:train"}, {}, tgt.keys()) as w:
        w.write(tgt.keys(), {"preds": [tgt.label(k) for k in tgt.keys()],
                             "confidence": [np.full(tgt.label(k).shape, 0.99, np.float16) for k in tgt.keys()]})
    train(_cfg(tmp_path, iters=2, synth=[str(tmp_path / "syn.h5")], target_pl=str(tmp_path / "pl.h5"), adv_weight=0.01))
    rec = json.loads((tmp_path / "run/metrics.jsonl").read_text().splitlines()[-1])
    for term in ("ce_src", "ce_syn", "sim", "ce_pl", "ce_mix", "adv"):
        assert np.isfinite(rec[term]), term
    assert -1 <= rec["sim"] <= 1


def test_ddp_two_cpu_processes(tmp_path, toy_env):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "zodicli.cli",
           "train-seg", "--model", "deeplabv3plus_r18", "--source", "toy:clear:train", "--out", str(tmp_path / "ddp"),
           "--iters", "3", "--batch-size", "2", "--crop", "64x96", "--resize", "none", "--num-workers", "0",
           "--log-every", "1", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["world_size"] == 2 and summary["iteration"] == 3
    assert len((tmp_path / "ddp/metrics.jsonl").read_text().splitlines()) == 3     # rank 0 logs alone


def test_evaluate_from_checkpoint(cli, tmp_path, toy_env):
    from zodicli.seg.train import train

    train(_cfg(tmp_path, iters=2, ckpt_every=2))
    ckpt = tmp_path / "run/last.pt"
    code, out, err = cli("evaluate", "--checkpoint", ckpt, "--dataset", "toy:fog:val", "--flip", "--batch-size", "2", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["n_images"] == 4 and res["n_pixels"] > 0
    preds = tmp_path / "run/last.preds-toy-fog-val.h5"
    from zodicli.store import Artifact

    a = Artifact(preds)
    assert a.get("preds", 0).shape == (128, 256) and a.meta["command"] == "predict"
    # sliding window over the full image gives the same shapes; a second run reuses the artifact
    code, out, _ = cli("evaluate", "--checkpoint", ckpt, "--dataset", "toy:fog:val", "--window", "64x128",
                       "--out", tmp_path / "win.h5", "--json")
    assert code == 0 and json.loads(out)["n_images"] == 4
    code, _, err = cli("evaluate", "--checkpoint", ckpt, "--pred", preds, "--dataset", "toy:fog:val")
    assert code == 2 and "exactly one of --pred" in err


def test_rare_class_sampling_prefers_rare_classes(tmp_path, toy_env):
    from zodicli.data.registry import open_dataset
    from zodicli.seg.data import Augment, TrainSet

    src = open_dataset("toy:clear:train")
    ts = TrainSet(src, Augment(), seed=0, rcs_temperature=0.01, cache_dir=tmp_path)
    probs, members = ts.rcs
    assert probs.sum() == pytest.approx(1.0) and (tmp_path / "rcs_stats.json").is_file()
    stats = json.loads((tmp_path / "rcs_stats.json").read_text())
    classes = sorted(int(c) for c in stats["members"])
    freq = np.array([stats["pixels"][c] for c in classes], float)
    assert probs[np.argmin(freq)] > probs[np.argmax(freq)]          # the rarest class is drawn more often
    keys = {ts.key_at(p) for p in range(50)}
    assert keys <= set(src.keys()) and ts.key_at(7) == TrainSet(src, Augment(), 0, rcs_temperature=0.01, cache_dir=tmp_path).key_at(7)


def test_image_cache_leaves_every_sample_unchanged(tmp_path, toy_env):
    """Cached, partly cached (a budget of a few images) or not: the same tensors, epoch after epoch."""
    from zodicli.data.registry import open_dataset
    from zodicli.seg.data import Augment, TrainSet
    from zodicli.store import Artifact, ArtifactWriter

    src, tgt = open_dataset("toy:clear:train"), open_dataset("toy:fog:train")
    with ArtifactWriter(tmp_path / "syn.h5", "translate", {}, {}, src.keys()) as w:   # half size: resized to the source's
        w.write(src.keys(), {"images": [src.image(k)[::2, ::2] for k in src.keys()]})
    rng = np.random.default_rng(0)
    with ArtifactWriter(tmp_path / "pl.h5", "pseudolabel", {}, {}, tgt.keys()) as w:
        w.write(tgt.keys(), {"preds": [rng.integers(0, 19, (128, 256)).astype(np.uint8) for _ in tgt.keys()],
                             "confidence": [rng.random((128, 256)).astype(np.float16) for _ in tgt.keys()]})
    syn = open_dataset(f"h5:{tmp_path / 'syn.h5'}")

    def samples(cache_mb, resize):
        ts = TrainSet(src, Augment(resize=resize, crop=(24, 40)), 3, [syn], tgt, Artifact(tmp_path / "pl.h5"), cache_mb=cache_mb)
        return [ts[p] for p in range(2 * len(src.keys()))], ts

    for resize in ((48, 96), None):
        plain, _ = samples(0, resize)
        for budget in (0.3 if resize else 1.5, 64):        # room for a few images, for all
            cached, ts = samples(budget, resize)
            kinds = [what[0] for what in ts._cache]
            if budget == 64:
                assert kinds.count("src") == kinds.count("syn") == len(src.keys()) and "tgt" in kinds
            else:
                assert 0 < len(kinds) < len(src.keys())          # partly cached
            for a, b in zip(plain, cached):
                assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_init_from_and_evaluate_on_a_translated_artifact(cli, tmp_path, toy_env):
    """ZoDi's target estimate: evaluate a checkpoint on h5:translated (images + aligned labels)."""
    from zodicli.data.registry import open_dataset
    from zodicli.seg.train import train
    from zodicli.store import ArtifactWriter

    train(_cfg(tmp_path, iters=1, ckpt_every=1))
    train(_cfg(tmp_path / "b", iters=1, ckpt_every=1, init_from=str(tmp_path / "run/last.pt")))
    with pytest.raises(InputError, match="holds a deeplabv3plus_r18"):
        train(_cfg(tmp_path / "c", iters=1, model="refinenet_lw_r50", init_from=str(tmp_path / "run/last.pt")))
    src = open_dataset("toy:clear:val")
    with ArtifactWriter(tmp_path / "syn.h5", "translate", {}, {}, src.keys()) as w:
        w.write(src.keys(), {"images": [src.image(k) for k in src.keys()], "labels": [src.label(k) for k in src.keys()]})
    code, out, err = cli("evaluate", "--checkpoint", tmp_path / "run/last.pt", "--dataset", f"h5:{tmp_path / 'syn.h5'}", "--json")
    assert code == 0, err
    assert json.loads(out)["n_images"] == 4


def test_photometric_augmentation_is_seeded_and_darkens_on_average():
    from zodicli.seg.augment import photometric

    x = torch.full((3, 16, 16), 0.5)
    a = photometric(x.clone(), np.random.default_rng(3))
    assert torch.equal(a, photometric(x.clone(), np.random.default_rng(3)))        # a function of the generator
    means = [photometric(x.clone(), np.random.default_rng(s)).mean().item() for s in range(200)]
    # brightness is log-uniform on [0.1, 1.2] and gamma log-uniform on [0.5, 2]: the mean output sits well below 0.5
    assert 0.1 < np.mean(means) < 0.4 and min(means) < 0.06 and max(means) > 0.55


def test_weighted_cross_entropy_by_hand():
    from zodicli.seg.losses import cross_entropy

    # two images of 1x2 pixels, two classes; image 0 weighs 0.5, image 1 weighs 2; one pixel ignored
    logits = torch.tensor([[[[0.0, 2.0]], [[0.0, 0.0]]], [[[1.0, 0.0]], [[0.0, 0.0]]]])   # (N=2, C=2, 1, 2)
    labels = torch.tensor([[[0, 1]], [[255, 0]]])
    ce = lambda z, y: float(torch.logsumexp(z, 0) - z[y])                                  # noqa: E731
    per_pixel = [ce(torch.tensor([0.0, 0.0]), 0), ce(torch.tensor([2.0, 0.0]), 1), ce(torch.tensor([0.0, 0.0]), 0)]
    assert cross_entropy(logits, labels).item() == pytest.approx(sum(per_pixel) / 3, abs=1e-6)
    weighted = (0.5 * per_pixel[0] + 0.5 * per_pixel[1] + 2 * per_pixel[2]) / 3             # over the 3 valid pixels
    assert cross_entropy(logits, labels, weight=torch.tensor([0.5, 2.0])).item() == pytest.approx(weighted, abs=1e-6)


def test_online_teacher_ema_by_hand():
    from zodicli.seg.self_training import OnlineTeacher

    student = torch.nn.Linear(3, 2)
    teacher = OnlineTeacher(student, decay=0.99)
    before = teacher.ema.weight.clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    teacher.update(student, 5)                            # α = min(1 - 1/6, 0.99) = 5/6
    assert torch.allclose(teacher.ema.weight, 5 / 6 * before + 1 / 6 * student.weight)
    teacher.update(student, 10_000)                       # α = decay
    assert torch.allclose(teacher.ema.weight, 0.99 * (5 / 6 * before + 1 / 6 * student.weight) + 0.01 * student.weight)


def test_online_self_training_runs_and_resumes_exactly(tmp_path, toy_env, monkeypatch):
    from zodicli.seg import train as T

    kw = dict(target="toy:fog:train", online_pl=True, pl_threshold=0.0, iters=4, ckpt_every=2)
    T.train(_cfg(tmp_path / "a", **kw))
    rec = [json.loads(line) for line in (tmp_path / "a/run/metrics.jsonl").read_text().splitlines()]
    assert all("ce_mix" in r and r["pl_w"] == 1.0 for r in rec)          # threshold 0: every target pixel counts
    real = T._losses

    def crash_at_step_3(*a):
        if a[5] == 3:
            raise MemoryError
        return real(*a)

    monkeypatch.setattr(T, "_losses", crash_at_step_3)
    with pytest.raises(MemoryError):
        T.train(_cfg(tmp_path / "b", **kw))
    monkeypatch.setattr(T, "_losses", real)
    assert T.train(_cfg(tmp_path / "b", **kw))["resumed"]
    a, b = (torch.load(tmp_path / d / "run/last.pt", weights_only=True) for d in ("a", "b"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["teacher"][k], b["teacher"][k]) for k in a["teacher"])
    with pytest.raises(InputError, match="--online-pl needs --target images"):
        T.TrainConfig(**{**TINY, "online_pl": True}).check()


def test_lr_schedules_by_hand():
    """MADM's: linear warm-up from 0.067 over 27 of 10,000 iterations (fvcore's WarmupParamScheduler),
    then x0.1 at 88.89 % and 96.3 % of the run (MultiStepParamScheduler)."""
    from zodicli.seg.train import TrainConfig, lr_at

    cfg = TrainConfig(lr=5e-6, iters=10_000, lr_schedule="multistep", warmup_iters=27, warmup_start=0.067)
    assert lr_at(cfg, 0, 1) == pytest.approx(5e-6 * (0.067 + 0.933 / 27))
    assert lr_at(cfg, 26, 1) == pytest.approx(5e-6)
    assert [lr_at(cfg, it, 1) for it in (27, 8888, 8889, 9629, 9630, 9999)] == pytest.approx(
        [5e-6, 5e-6, 5e-7, 5e-7, 5e-8, 5e-8])
    poly = TrainConfig(lr=0.01, iters=100, warmup_iters=10)
    assert lr_at(poly, 4, 1) == pytest.approx(0.01 * 5 / 10)                   # warm-up from 0, as before
    assert lr_at(poly, 55, 1) == pytest.approx(0.01 * (1 - 45 / 90) ** 0.9)
