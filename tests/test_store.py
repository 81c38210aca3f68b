"""The artifact store: resume, refusal, locking, sharding, merging, and kill -9 safety."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from zodicli.errors import ConflictError, InputError
from zodicli.store import Artifact, ArtifactWriter
from zodicli.store.shards import find_shards, merge_shards, parse_shard, shard_keys, shard_path

HELPER = Path(__file__).parent / "helpers" / "slow_writer.py"
KEYS = [f"k{i:02d}" for i in range(10)]


def write_all(path, keys=KEYS, settings=None, shard=None, batch=3, **kw):
    with ArtifactWriter(shard_path(path, shard), "test", settings or {"a": 1}, {"src": "x"}, shard_keys(keys, shard), shard=shard, **kw) as w:
        todo = w.todo
        for i in range(0, len(todo), batch):
            ks = todo[i:i + batch]
            w.write(ks, {"x": [np.full((2, 3), int(k[1:]), np.int16) for k in ks]})
        return todo


def contents(path):
    a = Artifact(path)
    return a.keys, {f: [a.get(f, k) for k in a.keys] for f in a.fields}


def same_contents(p, q):
    (ka, fa), (kb, fb) = contents(p), contents(q)
    return ka == kb and fa.keys() == fb.keys() and all(
        all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(fa[f], fb[f])) for f in fa)


def test_rerun_skips_finished_and_complete_file_returns_at_once(tmp_path):
    out = tmp_path / "a.h5"
    assert write_all(out) == KEYS
    assert write_all(out) == []
    a = Artifact(out)
    assert a.complete and a.meta["n_items"] == 10 and a.keys == sorted(KEYS)
    assert a.get("x", "k07").tolist() == [[7, 7, 7], [7, 7, 7]]


def test_partial_run_resumes_to_identical_output(tmp_path):
    with ArtifactWriter(tmp_path / "p.h5", "test", {"a": 1}, {"src": "x"}, KEYS) as w:
        w.write(["k03", "k01"], {"x": [np.full((2, 3), 3, np.int16), np.full((2, 3), 1, np.int16)]})
    with pytest.raises(InputError, match=r"incomplete \(2/10 items\).*--allow-partial"):
        Artifact(tmp_path / "p.h5")
    assert Artifact(tmp_path / "p.h5", allow_partial=True).keys == ["k01", "k03"]
    assert write_all(tmp_path / "p.h5") == [k for k in KEYS if k not in ("k01", "k03")]
    write_all(tmp_path / "q.h5", batch=1)
    assert same_contents(tmp_path / "p.h5", tmp_path / "q.h5")


def test_other_settings_are_refused_naming_the_difference(tmp_path):
    out = tmp_path / "a.h5"
    write_all(out, settings={"strength": 0.6, "batch_size": 4})
    write_all(out, settings={"strength": 0.6, "batch_size": 1})      # runtime setting: fine
    with pytest.raises(ConflictError, match=r"strength: 0\.6 -> 0\.7.*--overwrite"):
        write_all(out, settings={"strength": 0.7, "batch_size": 4})
    assert write_all(out, settings={"strength": 0.7}, overwrite=True) == KEYS
    assert Artifact(out).meta["settings"] == {"strength": 0.7}


def test_other_inputs_are_refused(tmp_path):
    out = tmp_path / "a.h5"
    write_all(out)
    with pytest.raises(ConflictError, match="inputs changed: src"):
        with ArtifactWriter(out, "test", {"a": 1}, {"src": "y"}, KEYS):
            pass


def test_ragged_fields_and_nested_groups(tmp_path):
    out = tmp_path / "r.h5"
    with ArtifactWriter(out, "test", {}, {}, ["a", "b"]) as w:
        w.write(["b"], {"img": [np.zeros((3, 4))], "features/s8": [np.ones(2, np.float16)]})
        w.write(["a"], {"img": [np.ones((5, 4))], "features/s8": [np.zeros(2, np.float16)]})
    a = Artifact(out)
    assert a.fields == ["features/s8", "img"]
    assert a.get("img", "a").shape == (5, 4) and a.get("img", "b").shape == (3, 4)
    with h5py.File(out) as f:
        assert f["img"].attrs["ragged"] and f["features/s8"].shape == (2, 2)
        assert [k.decode() for k in f["keys"][()]] == ["a", "b"]


def test_shard_merge_equals_unsharded(tmp_path):
    write_all(tmp_path / "full.h5")
    for i in range(3):
        write_all(tmp_path / "m.h5", shard=(i, 3), settings={"a": 1, "shard": f"{i}/3"})
    assert find_shards(tmp_path / "m.h5")[0] == 3
    assert merge_shards(tmp_path / "m.h5") == {"out": str(tmp_path / "m.h5"), "shards": 3, "items": 10, "packed": False}
    assert same_contents(tmp_path / "full.h5", tmp_path / "m.h5")
    full, merged = Artifact(tmp_path / "full.h5").meta, Artifact(tmp_path / "m.h5").meta
    assert merged["fingerprint"] == full["fingerprint"] and merged["settings_hash"] == full["settings_hash"]
    assert merged["shard"] == "" and merged["complete"]
    with h5py.File(tmp_path / "m.h5") as f:                  # a plain h5py reader sees the rows too
        assert f["x"].is_virtual and f["x"][7].tolist() == [[7, 7, 7], [7, 7, 7]]
    assert merge_shards(tmp_path / "m.h5", overwrite=True, pack=True)["packed"]
    with h5py.File(tmp_path / "m.h5") as f:
        assert not f["x"].is_virtual
    assert same_contents(tmp_path / "full.h5", tmp_path / "m.h5")


def test_a_virtual_merge_writes_metadata_only_and_refuses_a_missing_shard(tmp_path):
    keys = [f"k{i:03d}" for i in range(60)]
    big = {"x": lambda k: np.full((64, 64, 3), int(k[1:]), np.uint8)}
    for i in range(4):
        with ArtifactWriter(shard_path(tmp_path / "m.h5", (i, 4)), "test", {"a": 1}, {"src": "x"}, shard_keys(keys, (i, 4)),
                            shard=(i, 4)) as w:
            todo = w.todo
            w.write(todo, {"x": [big["x"](k) for k in todo], "ragged": [np.zeros(int(k[1:]) % 3 + 1) for k in todo]})
    shards_bytes = sum(p.stat().st_size for p in tmp_path.glob("m.shard-*.h5"))
    merge_shards(tmp_path / "m.h5")
    assert (tmp_path / "m.h5").stat().st_size < 0.2 * shards_bytes           # metadata, not another copy of the rows
    a = Artifact(tmp_path / "m.h5")
    assert a.keys == keys and a.get("x", "k041")[0, 0].tolist() == [41, 41, 41] and a.get("ragged", "k041").shape == (3,)
    a.close()
    (tmp_path / "m.shard-2-of-4.h5").rename(tmp_path / "moved.h5")
    with pytest.raises(InputError, match=r"m\.h5 reads its rows from its shards, and m\.shard-2-of-4\.h5 is not beside it"):
        Artifact(tmp_path / "m.h5")


def test_merge_refuses_missing_incomplete_or_mismatched_shards(tmp_path):
    out = tmp_path / "m.h5"
    write_all(out, shard=(0, 3))
    with pytest.raises(InputError, match=r"2 of 3 shards are missing: m\.shard-1-of-3\.h5, m\.shard-2-of-3\.h5"):
        merge_shards(out)
    write_all(out, shard=(1, 3), settings={"a": 2})
    with ArtifactWriter(shard_path(out, (2, 3)), "test", {"a": 1}, {"src": "x"}, shard_keys(KEYS, (2, 3)), shard=(2, 3)):
        pass
    with pytest.raises(InputError, match=r"shard m\.shard-1-of-3\.h5 was made with other settings.*a: 1 -> 2"):
        merge_shards(out)
    write_all(out, shard=(1, 3), overwrite=True)
    with pytest.raises(InputError, match=r"m\.shard-2-of-3\.h5 is incomplete \(0/3 items\).*--shard 2/3"):
        merge_shards(out)


def test_parse_shard():
    assert parse_shard(None) is None and parse_shard("0/1") is None
    assert parse_shard("2/4") == (2, 4)
    assert shard_keys(list("abcdefg"), (1, 3)) == ["b", "e"]
    assert parse_shard("auto", {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "3"}) == (2, 4)
    assert parse_shard("auto", {"RANK": "1", "WORLD_SIZE": "2"}) == (1, 2)
    for bad in ("4/4", "-1/2", "1of2"):
        with pytest.raises(InputError):
            parse_shard(bad)
    with pytest.raises(InputError, match="SLURM_ARRAY_TASK_ID"):
        parse_shard("auto", {})
    assert shard_path("out/x.h5", (0, 2)).name == "x.shard-0-of-2.h5"


def _start(out, n, delay):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.Popen([sys.executable, str(HELPER), str(out), str(n), str(delay)],
                            stdout=subprocess.PIPE, text=True, env=env)


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "busy.h5"
    proc = _start(out, 50, 0.2)
    try:
        assert proc.stdout.readline().strip() == "item000"
        with pytest.raises(ConflictError, match=rf"busy\.h5 is being written by pid {proc.pid} on .*zodi test"):
            with ArtifactWriter(out, "test", {"seed": 3}, {"src": "synthetic"}, ["item000"]):
                pass
    finally:
        proc.kill()
        proc.wait()


def test_kill_9_at_random_points_never_loses_finished_items(tmp_path):
    """12 runs killed at random moments (during start-up, mid-write, between items), each resuming
    the previous; every item a run reported as written must survive, the file must always open,
    and the finished file must equal an uninterrupted run's."""
    n = 80
    out = tmp_path / "killed.h5"
    rnd = random.Random(1234)
    reported: set[str] = set()
    kills = 0
    for trial in range(12):
        proc = _start(out, n, 0.01)
        if trial % 4 == 0:
            time.sleep(rnd.uniform(0.0, 0.4))              # somewhere in start-up or the first items
        else:
            for _ in range(rnd.randint(1, 5)):             # after some items, at a random offset
                reported.add(proc.stdout.readline().strip())
            time.sleep(rnd.uniform(0.0, 0.015))
        proc.send_signal(signal.SIGKILL)
        stdout, _ = proc.communicate()
        kills += proc.returncode == -signal.SIGKILL
        reported.update(stdout.split())
        if out.exists():
            with h5py.File(out, "r") as f:          # never corrupt: always opens
                assert f.attrs["zodi_command"] == "test"
        with ArtifactWriter(out, "test", {"seed": 3}, {"src": "synthetic"}, [f"item{i:03d}" for i in range(n)]) as w:
            assert reported.isdisjoint(w.todo), "an item reported as written was lost"
    assert kills >= 10
    assert _start(out, n, 0).wait() == 0
    assert _start(tmp_path / "clean.h5", n, 0).wait() == 0
    assert Artifact(out).complete
    assert same_contents(out, tmp_path / "clean.h5")
    assert not Path(str(out) + ".parts").exists()


def test_a_signal_between_a_parts_rename_and_its_bookkeeping_loses_nothing(tmp_path, monkeypatch):
    """SIGTERM (a KeyboardInterrupt) landing right after a batch's part file is in place: the item is
    folded into the main file, not removed with a writer that 'wrote nothing'."""
    from zodicli.store import artifact as A

    real = A._atomic_h5

    def then_interrupted(path, fill, in_memory=False):
        real(path, fill, in_memory)
        if path.parent.name.endswith(".parts"):
            raise KeyboardInterrupt

    monkeypatch.setattr(A, "_atomic_h5", then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_all(tmp_path / "a.h5", batch=2)
    monkeypatch.setattr(A, "_atomic_h5", real)
    a = Artifact(tmp_path / "a.h5", allow_partial=True)
    assert a.keys == ["k00", "k01"] and not a.complete


# -- resumed runs: segments ---------------------------------------------------------------------

def _image(k):
    return np.random.default_rng(int(k[1:])).integers(0, 256, (128, 128, 3), dtype=np.uint8)


def _run_images(out, keys, upto=None):
    """Write the images of ``keys`` still to do, stopping after ``upto`` of them (an interrupted run)."""
    with ArtifactWriter(out, "test", {"a": 1}, {"src": "x"}, keys) as w:
        for k in w.todo[:upto]:
            w.write([k], {"images": [_image(k)], "ragged": [np.full(int(k[1:]) % 3 + 1, int(k[1:]), np.int32)]})


def _bytes_written(fn) -> int:
    def wchar():
        return int(next(line for line in Path("/proc/self/io").read_text().splitlines() if line.startswith("wchar")).split()[1])
    before = wchar()
    fn()
    return wchar() - before


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux's per-process I/O counters")
def test_a_resume_writes_in_proportion_to_the_items_it_adds(tmp_path):
    """An interrupted run folds 90 % of the items into one file; the resume that adds the last 10 %
    writes its items once as a segment (plus the parts and a metadata-only main file) - 0.2x the
    final bytes, where folding everything again wrote 1.1x - and reads the same as a clean run."""
    keys = [f"k{i:03d}" for i in range(40)]
    out = tmp_path / "r.h5"
    _run_images(out, keys, upto=36)
    assert not (tmp_path / "r.h5.segments").exists()             # the first fold writes one file
    written = _bytes_written(lambda: _run_images(out, keys))
    final = out.stat().st_size + sum(p.stat().st_size for p in (tmp_path / "r.h5.segments").iterdir())
    assert written < 0.3 * final, (written, final)
    assert sorted(p.name for p in (tmp_path / "r.h5.segments").iterdir()) == ["segment-000000.h5", "segment-000001.h5"]
    assert os.path.samefile(tmp_path / "r.h5.segments" / "segment-000000.h5", tmp_path / "r.h5.segments" / "segment-000000.h5")
    _run_images(tmp_path / "clean.h5", keys)
    assert same_contents(out, tmp_path / "clean.h5")
    with h5py.File(out) as f:                                     # a plain h5py reader sees the rows
        assert f["images"].is_virtual and [k.decode() for k in f["keys"][()]] == keys
        assert np.array_equal(f["images"][37], _image("k037")) and f["ragged/00000037"][()].tolist() == [37, 37]
    assert Artifact(out).complete
    sizes = {r["field"]: r["bytes"] for r in Artifact(out).describe()}      # what 'zodi info' shows: the segments' bytes
    clean = {r["field"]: r["bytes"] for r in Artifact(tmp_path / "clean.h5").describe()}
    assert abs(sizes["images"] - clean["images"]) < 0.01 * clean["images"] and sizes["ragged"] > 0
    assert _bytes_written(lambda: _run_images(out, keys)) < 4096      # complete: nothing to do, nothing written


def test_segments_are_read_from_any_directory_and_pack_makes_one_file(tmp_path, monkeypatch, cli):
    keys = [f"k{i:03d}" for i in range(12)]
    out = tmp_path / "sub" / "r.h5"
    _run_images(out, keys, upto=5)
    _run_images(out, keys, upto=3)
    _run_images(out, keys)
    assert len(list((tmp_path / "sub" / "r.h5.segments").iterdir())) == 3     # the first run's file and two resumes
    _run_images(tmp_path / "clean.h5", keys)
    monkeypatch.chdir(tmp_path / "sub" / "r.h5.segments")
    assert same_contents(out, tmp_path / "clean.h5")
    assert cli("pack", out) == (0, f"{out}: 12 items, self-contained now (it read 3 other file(s))\n", "")
    assert not (tmp_path / "sub" / "r.h5.segments").exists()
    with h5py.File(out) as f:
        assert not f["images"].is_virtual and "zodi_reads" not in f.attrs
    assert same_contents(out, tmp_path / "clean.h5")
    assert cli("pack", out)[1] == f"{out}: 12 items, already self-contained\n"


def test_many_resumes_fold_into_one_file_again(tmp_path, monkeypatch):
    from zodicli.store import artifact as A

    monkeypatch.setattr(A, "MAX_SEGMENTS", 3)
    keys = [f"k{i:03d}" for i in range(8)]
    out = tmp_path / "r.h5"
    counts = []
    for _ in range(4):
        _run_images(out, keys, upto=2)
        segs = tmp_path / "r.h5.segments"
        counts.append(len(list(segs.iterdir())) if segs.exists() else 0)
    assert counts == [0, 2, 3, 0]                   # one file, then segments, then one file again
    _run_images(tmp_path / "clean.h5", keys)
    assert same_contents(out, tmp_path / "clean.h5")


def test_a_fold_killed_before_its_main_file_leaves_an_unread_segment_that_is_removed(tmp_path, monkeypatch):
    from zodicli.store import artifact as A

    keys = [f"k{i:03d}" for i in range(6)]
    out = tmp_path / "r.h5"
    _run_images(out, keys, upto=2)
    real = A.write_virtual

    def killed(path, meta, sources):
        raise KeyboardInterrupt                    # after the new segment, before the main file

    monkeypatch.setattr(A, "write_virtual", killed)
    with pytest.raises(KeyboardInterrupt):
        _run_images(out, keys, upto=2)
    monkeypatch.setattr(A, "write_virtual", real)
    assert len(list((tmp_path / "r.h5.segments").iterdir())) == 2          # written, not read by r.h5
    assert Artifact(out, allow_partial=True).keys == ["k000", "k001"]       # the main file still opens
    assert len(list((tmp_path / "r.h5.parts").iterdir())) == 2              # the parts are kept
    _run_images(out, keys)
    _run_images(tmp_path / "clean.h5", keys)
    assert same_contents(out, tmp_path / "clean.h5")
    assert sorted(p.name for p in (tmp_path / "r.h5.segments").iterdir()) == ["segment-000000.h5", "segment-000001.h5"]


def test_a_missing_segment_is_one_line_and_shards_with_segments_merge(tmp_path):
    keys = [f"k{i:03d}" for i in range(9)]
    for i in range(3):
        p = shard_path(tmp_path / "m.h5", (i, 3))
        for upto in (1, None):
            with ArtifactWriter(p, "test", {"a": 1}, {"src": "x"}, shard_keys(keys, (i, 3)), shard=(i, 3)) as w:
                for k in w.todo[:upto]:
                    w.write([k], {"images": [_image(k)], "ragged": [np.zeros(int(k[1:]) % 2 + 1)]})
    assert (tmp_path / "m.shard-1-of-3.h5.segments").is_dir()
    assert not merge_shards(tmp_path / "m.h5")["packed"]
    a = Artifact(tmp_path / "m.h5")
    assert a.keys == keys and np.array_equal(a.get("images", "k004"), _image("k004")) and a.get("ragged", "k005").shape == (2,)
    a.close()
    seg = next((tmp_path / "m.shard-1-of-3.h5.segments").iterdir())
    seg.rename(tmp_path / "moved.h5")
    with pytest.raises(InputError, match=rf"reads rows from m\.shard-1-of-3\.h5\.segments/{seg.name}, which is missing.*zodi pack"):
        Artifact(tmp_path / "m.h5")


def test_rows_that_change_shape_between_runs_make_a_ragged_field(tmp_path):
    out = tmp_path / "r.h5"
    with ArtifactWriter(out, "test", {}, {}, ["a", "b", "c"]) as w:
        w.write(["a", "b"], {"x": [np.zeros((2, 2)), np.ones((2, 2))]})
    with ArtifactWriter(out, "test", {}, {}, ["a", "b", "c"]) as w:
        w.write(["c"], {"x": [np.full((3, 2), 2.0)]})
    assert (tmp_path / "r.h5.segments").is_dir()
    a = Artifact(out)
    assert [a.get("x", k).shape for k in a.keys] == [(2, 2), (2, 2), (3, 2)]
    assert [a.get("x", k)[0, 0] for k in a.keys] == [0.0, 1.0, 2.0]
    with h5py.File(out) as f:
        assert f["x"].attrs["ragged"] and f["x/00000001"].is_virtual


def test_fields_are_compressed_by_kind_and_read_back_exactly(tmp_path):
    """gzip (readable by plain h5py and h5ls) for label maps, images and float16 maps; latents raw.
    Rows are compressed once, in the batch's part, and the fold copies the stored chunks."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 19, (2, 8, 16)).repeat(8, 1).repeat(8, 2).astype(np.uint8)       # blocky, (64, 128)
    rows = {"labels": list(labels), "images": list(rng.integers(0, 256, (2, 64, 128, 3), dtype=np.uint8)),
            "confidence": list(rng.random((2, 64, 128)).astype(np.float16)),
            "latents": list(rng.standard_normal((2, 4, 8, 16)).astype(np.float16))}
    with ArtifactWriter(tmp_path / "c.h5", "test", {}, {}, ["a", "b"]) as w:
        w.write(["a", "b"], rows)
    with h5py.File(tmp_path / "c.h5") as f:
        got = {name: (f[name].compression, f[name].compression_opts, f[name].shuffle, f[name].chunks) for name in rows}
        assert got == {"labels": ("gzip", 6, False, (1, 64, 128)), "images": ("gzip", 1, False, (1, 64, 128, 3)),
                       "confidence": ("gzip", 1, True, (1, 64, 128)), "latents": (None, None, False, (1, 4, 8, 16))}
        assert f["labels"].id.get_storage_size() < 0.05 * labels.nbytes
        for name, values in rows.items():
            assert np.array_equal(f[name][()], np.stack(values)) and f[name].fletcher32
    with ArtifactWriter(tmp_path / "raw.h5", "test", {}, {}, ["a", "b"], compress=False) as w:
        w.write(["a", "b"], rows)
    assert same_contents(tmp_path / "c.h5", tmp_path / "raw.h5")
    with h5py.File(tmp_path / "raw.h5") as f:
        assert f["labels"].compression is None and f["labels"].id.get_storage_size() >= labels.nbytes
