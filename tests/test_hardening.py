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
