"""Hostile inputs and faults: crafted checkpoints, planted links, concurrent runs, divergence,
signals, full and read-only disks, odd files. Each test reproduces a case that once failed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from zodicli.errors import ConflictError, InputError, ZodiError

ZODI = str(Path(sys.executable).parent / "zodi")
TINY = dict(model="deeplabv3plus_r18", source="toy:clear:train", crop=(64, 96), resize=None, batch_size=2,
            num_workers=0, log_every=1, lr=0.01)


def _cfg(tmp_path, **kw):
    from zodicli.seg.train import TrainConfig

    return TrainConfig(**{**TINY, "out": str(tmp_path / "run"), "iters": 6, "ckpt_every": 3, **kw})


class _Evil:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _crafted_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"model_config": {"name": "deeplabv3plus_r18", "num_classes": 19}, "model": {}, "x": _Evil(marker)}, path)
    return path


# --- checkpoints never run code ----------------------------------------------------------------

def test_a_crafted_checkpoint_is_refused_without_running_code(cli, toy_env, tmp_path):
    marker = tmp_path / "pwned"
    evil = _crafted_checkpoint(tmp_path / "evil.pt", marker)
    code, _, err = cli("evaluate", "--checkpoint", evil, "--dataset", "toy:clear:val")
    assert code == 1 and "holds objects other than tensors and plain values, so it is not loaded" in err
    assert len(err.strip().splitlines()) == 1
    assert not marker.exists()


def test_a_planted_last_pt_and_init_from_do_not_run_code(tmp_path, toy_env):
    from zodicli.seg.train import train

    marker = tmp_path / "pwned"
    (tmp_path / "run").mkdir()
    _crafted_checkpoint(tmp_path / "run/last.pt", marker)
    with pytest.raises(InputError, match="not loaded"):
        train(_cfg(tmp_path))
    with pytest.raises(InputError, match="not loaded"):
        train(_cfg(tmp_path / "b", init_from=str(tmp_path / "run/last.pt")))
    assert not marker.exists()


def test_checkpoints_hold_only_tensors_and_plain_values_and_resume_the_numpy_rng(tmp_path, toy_env):
    from zodicli.seg.checkpoint import load_checkpoint, numpy_rng_state, set_numpy_rng_state
    from zodicli.seg.train import train

    train(_cfg(tmp_path, iters=2, ckpt_every=1))
    state = torch.load(tmp_path / "run/last.pt", weights_only=True)      # raises on anything else
    assert state["iteration"] == 2 and load_checkpoint(tmp_path / "run/last.pt")["iteration"] == 2
    np.random.seed(7)
    np.random.standard_normal()                 # leaves a cached Gaussian in the state
    saved = numpy_rng_state()
    expected = np.random.standard_normal(5)
    set_numpy_rng_state(saved)
    assert np.array_equal(np.random.standard_normal(5), expected)


# --- one run per output; links in the output folder ----------------------------------------------

def test_a_second_train_seg_on_the_same_out_is_refused(tmp_path, toy_env):
    from zodicli.seg.train import train
    from zodicli.store.lock import WriterLock

    (tmp_path / "run").mkdir()
    with WriterLock(tmp_path / "run" / "train-seg", "zodi train-seg"):
        with pytest.raises(ConflictError, match=r"train-seg is being written by pid \d+ .*zodi train-seg"):
            train(_cfg(tmp_path))
    assert not (tmp_path / "run/metrics.jsonl").exists()


@pytest.mark.parametrize("name", ["train-seg.lock", "metrics.jsonl"])
def test_train_seg_does_not_write_through_planted_links(tmp_path, toy_env, name):
    from zodicli.seg.train import train

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / name).symlink_to(victim)
    with pytest.raises(InputError, match=rf"{name} is a symbolic link; zodi does not write through links"):
        train(_cfg(tmp_path))
    assert victim.read_text() == "precious"


def test_temporaries_are_fresh_files_so_a_planted_tmp_link_is_left_alone(tmp_path, toy_env):
    from zodicli.seg.train import train

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "run").mkdir()
    for name in ("last.pt.tmp", ".last.pt.tmp"):
        (tmp_path / "run" / name).symlink_to(victim)
    train(_cfg(tmp_path, iters=2, ckpt_every=1))
    assert victim.read_text() == "precious"
    assert torch.load(tmp_path / "run/last.pt", weights_only=True)["iteration"] == 2
    assert oct(os.stat(tmp_path / "run/last.pt").st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_artifact_writer_refuses_planted_links(tmp_path):
    from zodicli.store import ArtifactWriter

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "out.h5.lock").symlink_to(victim)
    with pytest.raises(InputError, match=r"out\.h5\.lock is a symbolic link"):
        with ArtifactWriter(tmp_path / "out.h5", "test", {}, {}, ["a"]):
            pass
    (tmp_path / "out.h5.lock").unlink()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out.h5.parts").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InputError, match=r"out\.h5\.parts is a symbolic link"):
        with ArtifactWriter(tmp_path / "out.h5", "test", {}, {}, ["a"]):
            pass
    assert victim.read_text() == "precious" and not list((tmp_path / "elsewhere").iterdir())


# --- divergence ----------------------------------------------------------------------------------

def test_a_diverging_run_keeps_only_healthy_checkpoints_and_its_hint_works(tmp_path, toy_env, monkeypatch):
    from zodicli.seg import train as T

    # lr 1e12: the first update is huge but finite, the next loss is NaN; its checkpoint must not be kept
    with pytest.raises(ZodiError, match=r"the loss became (nan|inf) at iteration 1; no checkpoint was written yet"):
        T.train(_cfg(tmp_path / "a", lr=1e12, iters=30, ckpt_every=1))
    assert not (tmp_path / "a/run/last.pt").exists()

    real = T._losses

    def nan_from_step_4(cfg, net, trainee, b, target, it, *a):
        loss, parts = real(cfg, net, trainee, b, target, it, *a)
        return (loss * float("nan") if it >= 4 else loss), parts

    monkeypatch.setattr(T, "_losses", nan_from_step_4)
    with pytest.raises(ZodiError) as e:
        T.train(_cfg(tmp_path / "b", iters=8, ckpt_every=2))
    last = tmp_path / "b/run/last.pt"
    # iteration 4's state was never followed by a finite loss: the healthy one is iteration 2's
    assert f"the last healthy checkpoint is {last} (iteration 2)" in str(e.value)
    assert f"--init-from {last} --out NEW_FOLDER" in str(e.value)
    assert torch.load(last, weights_only=True)["iteration"] == 2
    monkeypatch.setattr(T, "_losses", real)
    summary = T.train(_cfg(tmp_path / "c", iters=2, init_from=str(last), lr=0.001))        # the hint, followed
    assert summary["done"] == 2


def test_resume_drops_log_records_past_the_checkpoint(tmp_path, toy_env, monkeypatch):
    from zodicli.seg import train as T

    real = T._losses

    def crash_at_step_5(cfg, net, trainee, b, target, it, *a):
        if it == 5:
            raise MemoryError                      # a crash, not a stop: nothing is saved past iteration 3
        return real(cfg, net, trainee, b, target, it, *a)

    monkeypatch.setattr(T, "_losses", crash_at_step_5)
    with pytest.raises(MemoryError):
        T.train(_cfg(tmp_path))
    log = tmp_path / "run/metrics.jsonl"
    assert [json.loads(line)["iter"] for line in log.read_text().splitlines()] == [1, 2, 3, 4, 5]
    monkeypatch.setattr(T, "_losses", real)
    T.train(_cfg(tmp_path))
    assert [json.loads(line)["iter"] for line in log.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]


# --- signals ---------------------------------------------------------------------------------------

def _wait_for(predicate, proc, timeout=120):
    t0 = time.time()
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.05)


def test_sigterm_in_train_seg_saves_the_step_it_reached_and_resumes_exactly(tmp_path, toy_env):
    args = [ZODI, "train-seg", "--model", "deeplabv3plus_tiny", "--source", "toy:clear:train", "--crop", "32x64",
            "--resize", "64x128", "--batch-size", "2", "--num-workers", "0", "--log-every", "1", "--lr", "0.01",
            "--iters", "40", "--ckpt-every", "1000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert subprocess.run([*args, "--out", tmp_path / "whole"], env=env, capture_output=True).returncode == 0
    proc = subprocess.Popen([*args, "--out", tmp_path / "cut"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    log = tmp_path / "cut/metrics.jsonl"
    _wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "terminated; finished items are kept" in err
    stopped = torch.load(tmp_path / "cut/last.pt", weights_only=True)["iteration"]
    assert 3 <= stopped < 40                     # without a save on stop, nothing would be kept (--ckpt-every 1000)
    r = subprocess.run([*args, "--out", tmp_path / "cut"], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and f"resuming {tmp_path / 'cut'} at iteration {stopped}/40" in r.stderr
    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=True)["model"] for d in ("whole", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    iters = [json.loads(line)["iter"] for line in log.read_text().splitlines()]
    assert iters == list(range(1, 41))


def test_sigterm_in_translate_folds_finished_items(tmp_path, toy_env):
    from zodicli.diffusion.tiny import make_tiny
    from zodicli.store import Artifact

    make_tiny(tmp_path / "m")
    out = tmp_path / "t.h5"
    proc = subprocess.Popen([ZODI, "translate", "--src", "toy:clear:train", "--prompt", "fog", "--model", tmp_path / "m/sd",
                             "--controlnet", tmp_path / "m/controlnet", "--short-side", "32", "--steps", "20",
                             "--batch-size", "1", "--out", out], env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parts = Path(str(out) + ".parts")
    _wait_for(lambda: parts.is_dir() and any(parts.glob("part-*.h5")), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "zodi: terminated; finished items are kept" in err
    a = Artifact(out, allow_partial=True)
    assert 1 <= len(a) < 8 and not a.complete and not parts.exists()


# --- inputs that changed under a resume -----------------------------------------------------------

def test_resuming_on_another_city_with_the_same_keys_is_refused(tmp_path, toy_root, monkeypatch):
    from zodicli.data.registry import open_dataset
    from zodicli.data.toy import make_toy
    from zodicli.seg.train import train
    from zodicli.store import ArtifactWriter

    other = tmp_path / "other"
    make_toy(other, n_train=8, n_val=4, seed=99)
    monkeypatch.setenv("ZODI_TOY_ROOT", str(toy_root))
    a = open_dataset("toy:clear:train")
    with ArtifactWriter(tmp_path / "t.h5", "translate", {"x": 1}, {"src": a.fingerprint()}, a.keys()) as w:
        w.write(a.keys()[:2], {"images": [a.image(k) for k in a.keys()[:2]]})       # interrupted after 2 items
    train(_cfg(tmp_path, iters=2, ckpt_every=1))
    monkeypatch.setenv("ZODI_TOY_ROOT", str(other))
    b = open_dataset("toy:clear:train")
    assert b.keys() == a.keys() and b.fingerprint() != a.fingerprint()
    with pytest.raises(ConflictError, match="made with other settings: inputs changed: src"):
        ArtifactWriter(tmp_path / "t.h5", "translate", {"x": 1}, {"src": b.fingerprint()}, b.keys()).__enter__()
    with pytest.raises(ConflictError, match="other settings or data: inputs changed: source"):
        train(_cfg(tmp_path, iters=2, ckpt_every=1))      # the finished run, re-run on the other city


def test_a_copy_of_a_dataset_elsewhere_keeps_its_fingerprint(tmp_path, toy_root, monkeypatch):
    import shutil

    from zodicli.data.registry import open_dataset

    monkeypatch.setenv("ZODI_TOY_ROOT", str(toy_root))
    before = open_dataset("toy:fog:val").fingerprint()
    shutil.copytree(toy_root, tmp_path / "scratch", copy_function=shutil.copyfile)     # new mtimes, as `cp -r` gives
    monkeypatch.setenv("ZODI_TOY_ROOT", str(tmp_path / "scratch"))
    assert open_dataset("toy:fog:val").fingerprint() == before


# --- image and label files ---------------------------------------------------------------------------

def test_16_bit_greyscale_images_are_scaled_to_8_bits(tmp_path):
    from PIL import Image

    from zodicli.data.images import read_rgb

    a = (np.arange(32 * 48).reshape(32, 48) * 42).astype(np.uint16)         # 0 .. 64,470
    Image.fromarray(a).save(tmp_path / "ir.png")
    rgb = read_rgb(tmp_path / "ir.png")
    expected = np.floor(a / 257 + 0.5).astype(np.uint8)                      # round(v / 257)
    assert rgb.shape == (32, 48, 3) and rgb.dtype == np.uint8
    assert all(np.array_equal(rgb[..., c], expected) for c in range(3))
    assert rgb[0, 1, 0] == 0 and rgb[-1, -1, 0] == 251                      # 42 / 257 -> 0; 64470 / 257 -> 250.9


def test_truncated_and_oversized_images_name_the_file(cli, tmp_path, monkeypatch):
    from PIL import Image

    from zodicli.data.images import read_rgb

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.png is not a readable image"):
        read_rgb(tmp_path / "cut.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)                       # 64x64 = 2 x 2,048: a "bomb" now
    with pytest.raises(InputError, match=r"a\.png is too large to decode safely"):
        read_rgb(tmp_path / "a.png")


def test_label_ids_outside_the_table_warn_with_their_share(tmp_path, capsys):
    from PIL import Image

    from zodicli.data import registry
    from zodicli.data.registry import open_dataset

    (tmp_path / "img").mkdir()
    (tmp_path / "lbl").mkdir()
    lbl8 = np.full((10, 10), 7, np.uint8)          # road
    lbl8[0, :5] = 200                              # 5 % of the pixels
    lbl16 = np.full((10, 10), 7, np.uint16)
    lbl16[:3] = 300                                # 30 %
    for name, lbl in (("a", lbl8), ("b", lbl16)):
        Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "img" / f"{name}.png")
        Image.fromarray(lbl).save(tmp_path / "lbl" / f"{name}.png")
    registry._warned.clear()
    ds = open_dataset(f"folder:{tmp_path / 'img'}:{tmp_path / 'lbl'}:labelid")
    a = ds.label("a")
    assert (a[0, :5] == 255).all() and (a[1:] == 0).all()
    err = capsys.readouterr().err
    assert "a.png holds ids outside the label_ids encoding (200) on 5.0% of its pixels; they count as ignore" in err
    b = ds.label("b")                               # 16-bit ids past 255 are no longer an error, and not repeated
    assert (b[:3] == 255).all() and (b[3:] == 0).all() and capsys.readouterr().err == ""


def test_label_id_predictions_scored_as_train_ids_get_a_warning(cli, toy_env, tmp_path):
    from zodicli.data.images import write_png
    from zodicli.data.registry import open_dataset

    ds = open_dataset("toy:clear:val")
    to_label_id = np.array([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33] + [0] * 237, np.uint8)
    for k in ds.keys():
        write_png(tmp_path / "preds" / f"{k}.png", to_label_id[ds.label(k)])        # perfect, but as label ids
    code, out, err = cli("evaluate", "--pred", tmp_path / "preds", "--dataset", "toy:clear:val")
    assert code == 0 and "ids outside the trainid encoding and count as ignore (if they are label-id PNGs, pass --pred-encoding labelid)" in err
    code, out, err = cli("evaluate", "--pred", tmp_path / "preds", "--dataset", "toy:clear:val", "--pred-encoding", "labelid",
                         "--json")
    assert code == 0 and json.loads(out)["miou"] == 100.0 and "warning" not in err


# --- faults of the machine ---------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (root only; skipped where mounting is not allowed)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _run(*args, **kw):
    return subprocess.run([ZODI, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **kw})


def test_a_full_disk_gives_one_line_keeps_finished_work_and_resumes(tmp_path, toy_root, small_disk):
    env = {"ZODI_TOY_ROOT": str(toy_root)}
    assert _run("baseline", "fit", "--train", "toy:clear:train", "--out", tmp_path / "bl.npz", **env).returncode == 0
    args = ["baseline", "predict", "--model", tmp_path / "bl.npz", "--src", "toy:fog:train", "--batch-size", "2"]
    r = _run(*args, "--out", small_disk / "p.h5", **env)
    assert r.returncode == 1, r.stderr                               # not a segfault
    assert r.stderr.count("\n") == 1 and "zodi: error: not enough space to write" in r.stderr and "MiB are free" in r.stderr
    assert not [p for p in small_disk.rglob("*") if p.name.endswith(".tmp")]
    kept = len(list((small_disk / "p.h5.parts").glob("part-*.h5")))
    assert kept >= 1
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    r = _run(*args, "--out", small_disk / "p.h5", "--json", **env)
    assert r.returncode == 0 and json.loads(r.stdout)["reused"] == 2 * kept
    assert _run(*args, "--out", tmp_path / "ref.h5", **env).returncode == 0
    from zodicli.store import Artifact

    a, b = Artifact(small_disk / "p.h5"), Artifact(tmp_path / "ref.h5")
    assert a.keys == b.keys and all(np.array_equal(a.get("preds", k), b.get("preds", k)) for k in a.keys)


def test_a_full_disk_during_train_seg_names_the_space_needed(tmp_path, toy_root, small_disk):
    r = _run("train-seg", "--model", "deeplabv3plus_r18", "--source", "toy:clear:train", "--crop", "32x64", "--resize", "none",
             "--batch-size", "2", "--num-workers", "0", "--iters", "2", "--ckpt-every", "1", "--out", small_disk / "run",
             ZODI_TOY_ROOT=str(toy_root))
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("zodi: error: not enough space to write")
    assert "last.pt: it needs about" in r.stderr and "internal error" not in r.stderr
    assert sorted(p.name for p in (small_disk / "run").iterdir()) == ["metrics.jsonl"]


def test_a_read_only_report_dir_still_prints_the_table(cli, toy_env, tmp_path, monkeypatch):
    from zodicli.data.images import write_png
    from zodicli.data.registry import open_dataset
    from zodicli.store import files

    ds = open_dataset("toy:clear:val")
    for k in ds.keys():
        write_png(tmp_path / "preds" / f"{k}.png", ds.label(k))

    def read_only(*a, **kw):
        raise OSError(30, "Read-only file system", str(tmp_path / "rep"))

    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    code, out, err = cli("evaluate", "--pred", tmp_path / "preds", "--dataset", "toy:clear:val", "--report-dir", tmp_path / "rep")
    assert code == 1 and "mIoU" in out and "100.00" in out
    assert err.strip() == (f"zodi: error: the scores are above, but the report was not written: {tmp_path / 'rep'} "
                           "is on a read-only file system, so it is not writable (choose another --out)")


def test_a_bad_image_in_a_loader_worker_is_one_short_line(tmp_path, toy_root):
    import shutil

    city = tmp_path / "city"
    shutil.copytree(toy_root, city)
    victim = sorted((city / "cityscapes/leftImg8bit/train").rglob("*.png"))[3]
    victim.write_bytes(victim.read_bytes()[:200])
    r = _run("train-seg", "--model", "deeplabv3plus_r18", "--source", "toy:clear:train", "--crop", "32x64", "--resize", "none",
             "--batch-size", "2", "--num-workers", "1", "--iters", "4", "--out", tmp_path / "run", ZODI_TOY_ROOT=str(city))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and lines[-1].startswith(f"zodi: error: {victim} is not a readable image"), r.stderr
    assert len(lines[-1]) < 400 and "Traceback" not in r.stderr


# --- settings, specs, hints ------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    (b"iters: 2.7\n", "config file {cfg}: 'iters' must be an integer, not 2.7"),
    (b"synth: a.h5\n", "config file {cfg}: 'synth' must be a list"),
    (b"lr: 0.1\n\xff\xfe\n", "config file {cfg} is not UTF-8 text"),
    (b"evaluate: {classes: madm11}\ntranslate: {steps: 3}\n",
     "config file {cfg} has sections for evaluate, translate but none for 'train-seg'"),
])
def test_config_files_that_click_would_bend_are_refused(cli, tmp_path, text, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(text)
    code, _, err = cli("train-seg", "--config", cfg, "--source", "toy:clear:train", "--out", tmp_path / "run")
    assert code == 1 and err.count("\n") == 1 and message.format(cfg=cfg) in err, err


def test_a_section_for_this_command_is_used(cli, toy_env, tmp_path, baseline_model):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("evaluate: {classes: madm11}\npredict: {batch-size: 3}\n")
    code, out, err = cli("baseline", "predict", "--config", cfg, "--model", baseline_model, "--src", "toy:fog:val",
                         "--out", tmp_path / "p.h5", "--json")
    assert code == 0, err
    from zodicli.store import Artifact

    assert Artifact(tmp_path / "p.h5").meta["settings"]["batch_size"] == 3


@pytest.fixture
def baseline_model(tmp_path, toy_env, cli):
    assert cli("baseline", "fit", "--train", "toy:clear:train", "--out", tmp_path / "bl.npz")[0] == 0
    return tmp_path / "bl.npz"


@pytest.mark.parametrize("env, message", [
    ({"SLURM_ARRAY_TASK_ID": "abc", "SLURM_ARRAY_TASK_COUNT": "4"}, "SLURM_ARRAY_TASK_ID='abc' is not an integer"),
    ({"RANK": "0", "WORLD_SIZE": "x"}, "WORLD_SIZE='x' is not an integer"),
])
def test_shard_auto_with_garbage_variables_is_one_line(env, message):
    from zodicli.store.shards import parse_shard

    with pytest.raises(InputError, match=message):
        parse_shard("auto", env)
    with pytest.raises(InputError, match="at most 100,000 shards"):
        parse_shard(f"0/{10 ** 21}")
    assert parse_shard("3/100000") == (3, 100000)


def test_zero_sizes_are_refused_and_leave_no_artifact(cli, toy_env, tmp_path, baseline_model):
    code, _, err = cli("translate", "--src", "toy:clear:val", "--prompt", "fog", "--size", "0x0", "--out", tmp_path / "t.h5")
    assert code == 2 and "'0x0': both sides must be at least 1 pixel" in err and not (tmp_path / "t.h5").exists()
    code, _, err = cli("train-seg", "--resize", "0x0", "--out", tmp_path / "r")
    assert code == 2 and "both sides must be at least 1 pixel" in err


def test_a_writer_that_fails_before_its_first_item_leaves_nothing(tmp_path):
    from zodicli.store import ArtifactWriter

    with pytest.raises(RuntimeError):
        with ArtifactWriter(tmp_path / "o.h5", "test", {}, {}, ["a", "b"]):
            raise RuntimeError("the model failed to load")
    assert list(tmp_path.iterdir()) == []


def test_hints_name_only_options_the_command_has(cli, toy_env, tmp_path, baseline_model):
    from zodicli.store import ArtifactWriter

    with ArtifactWriter(tmp_path / "half.h5", "translate", {}, {}, ["a", "b"]) as w:
        w.write(["a"], {"images": [np.zeros((4, 4, 3), np.uint8)]})
    code, _, err = cli("baseline", "predict", "--model", baseline_model, "--src", f"h5:{tmp_path / 'half.h5'}", "--out", tmp_path / "p.h5")
    assert code == 1 and "or pass --allow-partial" in err
    code, _, err = cli("baseline", "predict", "--model", baseline_model, "--src", f"h5:{tmp_path / 'half.h5'}",
                       "--out", tmp_path / "p.h5", "--allow-partial")
    assert code == 0, err
    (tmp_path / "rgbpreds").mkdir()
    from PIL import Image

    from zodicli.data.registry import open_dataset

    key = open_dataset("toy:clear:val").keys()[0]
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgbpreds" / f"{key}.png")
    code, _, err = cli("evaluate", "--pred", tmp_path / "rgbpreds", "--dataset", "toy:clear:val", "--allow-partial")
    assert code == 1 and "expected one (write predictions as single-channel train-id PNGs" in err and "color" not in err
    code, _, err = cli("train-seg", "--source", "toy:clear:train", "--synth", tmp_path / f"rgbpreds/{key}.png", "--out", tmp_path / "r",
                       "--model", "deeplabv3plus_tiny", "--iters", "1")
    assert code == 1 and f"{key}.png is not an HDF5 file (pass an artifact (.h5) written by a zodi command)" in err


def test_an_unmerged_sharded_run_is_not_silently_redone(cli, toy_env, tmp_path, baseline_model):
    args = ["baseline", "predict", "--model", baseline_model, "--src", "toy:fog:val", "--out", tmp_path / "p.h5"]
    for i in range(2):
        assert cli(*args, "--shard", f"{i}/2")[0] == 0
    code, _, err = cli(*args)
    assert code == 1 and f"p.h5 was started as 2 shards and is not merged yet (run 'zodi merge {tmp_path / 'p.h5'}' first" in err
    assert cli("merge", tmp_path / "p.h5")[0] == 0
    code, out, _ = cli(*args, "--json")
    assert code == 0 and json.loads(out)["computed"] == 0


def test_a_colon_in_a_folder_path_is_escaped(tmp_path):
    from PIL import Image

    from zodicli.data.registry import open_dataset

    d = tmp_path / "run:3" / "img+x"
    d.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(d / "k.png")
    escaped = str(d).replace(":", "\\:").replace("+", "\\+")
    assert open_dataset(f"folder:{escaped}").keys() == ["k"]
    with pytest.raises(InputError, match=r"a ':' or '\+' inside a path is written '\\:' or '\\\+'"):
        open_dataset(f"folder:{d}")


def test_model_folders_missing_a_part_or_with_truncated_weights_are_named(tmp_path):
    import shutil

    from zodicli.diffusion.models import load_stack
    from zodicli.diffusion.tiny import make_tiny

    make_tiny(tmp_path / "m")
    sd = tmp_path / "m/sd"
    shutil.copytree(sd, tmp_path / "novae")
    shutil.rmtree(tmp_path / "novae/vae")
    with pytest.raises(InputError, match=r"novae lacks vae/ \(a diffusers pipeline folder holds unet/, vae/"):
        load_stack(str(tmp_path / "novae"))
    weights = next((sd / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(InputError, match=rf"cannot load {sd / 'unet'}"):
        load_stack(str(sd))


def test_a_flipped_bit_in_an_artifact_is_an_error_not_a_value(tmp_path):
    import h5py

    from zodicli.store import Artifact, ArtifactWriter

    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    with ArtifactWriter(tmp_path / "a.h5", "test", {}, {}, ["k"]) as w:
        w.write(["k"], {"images": [img]})
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert f["images"].fletcher32
        offset = f["images"].id.get_chunk_info(0).byte_offset
    raw = bytearray((tmp_path / "a.h5").read_bytes())
    raw[offset + 100] ^= 0x10
    (tmp_path / "a.h5").write_bytes(bytes(raw))
    with pytest.raises(InputError, match=r"a\.h5: row 0 of 'images' cannot be read, the file is damaged"):
        Artifact(tmp_path / "a.h5").get("images", "k")


def test_a_read_only_out_is_one_line(tmp_path, toy_root, small_disk):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    r = _run("baseline", "fit", "--train", "toy:clear:train", "--out", small_disk / "bl.npz", ZODI_TOY_ROOT=str(toy_root))
    assert r.returncode == 1 and r.stderr.strip().startswith("zodi: error: ") and "read-only file system" in r.stderr
    r = _run("train-seg", "--model", "deeplabv3plus_r18", "--source", "toy:clear:train", "--iters", "1",
             "--out", small_disk / "run", ZODI_TOY_ROOT=str(toy_root))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and f"{small_disk / 'run'} is on a read-only file system" in r.stderr


def test_a_log_line_cut_short_by_a_kill_is_dropped_on_resume(tmp_path):
    from zodicli.seg.train import _truncate_log

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"iter": 1, "loss": 2.0}\n{"iter": 2, "eval": {}}\n{"iter": 3, "loss": 1.5}\n{"iter": 4, "lo')
    _truncate_log(log, 2)
    assert log.read_text() == '{"iter": 1, "loss": 2.0}\n{"iter": 2, "eval": {}}\n'
