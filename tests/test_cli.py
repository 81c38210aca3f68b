"""The command line: help without torch, one-line errors with exit codes, config files, evaluate."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from zodicli.cli import COMMANDS

HELP_ARGS = [[]] + [[c] for c in COMMANDS] + [["baseline", "fit"], ["baseline", "predict"], ["datasets", "list"],
                                             ["datasets", "check"], ["datasets", "make-toy"], ["models", "list"],
                                             ["models", "make-tiny"]]


def test_every_help_answers_without_importing_torch():
    code = (
        "import sys\n"
        "from zodicli.cli import cli\n"
        f"for args in {HELP_ARGS!r}:\n"
        "    try:\n"
        "        cli.main(args + ['--help'], prog_name='zodi')\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (args, e.code)\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'h5py') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    for name in COMMANDS:
        assert name in out


def _leaf_commands():
    import importlib

    import click

    def walk(cmd, path):
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, cmd
    for name, (module, _) in COMMANDS.items():
        yield from walk(importlib.import_module(module).command, [name])


def test_every_option_has_help_and_train_seg_groups_its_options_by_purpose(cli):
    import click

    bare = [(" ".join(path), p.opts[0]) for path, cmd in _leaf_commands() for p in cmd.params
            if isinstance(p, click.Option) and not p.help]
    assert bare == []
    every = {p.name for _, cmd in _leaf_commands() for p in cmd.params}
    for path, cmd in _leaf_commands():
        for names in getattr(cmd, "SECTIONS", {}).values():      # a misspelt name would leave its option in "Other"
            assert set(names) <= every, (path, set(names) - every)
    code, out, _ = cli("train-seg", "--help")
    heads = [line.rstrip(":") for line in out.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert heads == ["Inputs", "Model", "Method", "Schedule", "Performance", "Output", "Other"]
    import re

    flags = [m[1] for m in (re.match(r"  (?:-\w, )?(--[\w-]+)", line) for line in out.splitlines()) if m]
    from zodicli.commands.train_seg import command as train_seg

    assert sorted(flags) == sorted({p.opts[0] for p in train_seg.params} | {"--help"})      # each option once, none lost
    assert "deeplabv3plus_r101" in out and "segformer_b5" in out and "sd_unet" not in out.split("--pretrained")[0]


@pytest.fixture
def baseline_preds(cli, toy_env, tmp_path):
    model, preds = tmp_path / "bl.npz", tmp_path / "p.h5"
    assert cli("baseline", "fit", "--train", "toy:clear:train", "--out", model)[0] == 0
    assert cli("baseline", "predict", "--model", model, "--src", "toy:clear:val", "--out", preds)[0] == 0
    return model, preds


def _one_error_line(code, err, expected_code, pattern):
    lines = err.strip().splitlines()
    assert code == expected_code, err
    assert len(lines) == 1, err
    assert lines[0].startswith("zodi: error: ") and pattern in lines[0], lines[0]


def test_bad_inputs_give_one_clear_line(cli, toy_env, tmp_path, baseline_preds):
    model, preds = baseline_preds
    notzodi = tmp_path / "plain.h5"
    with h5py.File(notzodi, "w") as f:
        f["x"] = 1
    (tmp_path / "junk.h5").write_text("not hdf5")
    (tmp_path / "bad.yaml").write_text("classes: synthia16\nbogus: 1\n")
    (tmp_path / "broken.yaml").write_text("pred: [unclosed\n")
    cases = [
        (["evaluate", "--pred", tmp_path / "missing.h5", "--dataset", "toy:clear:val"], "artifact", "does not exist"),
        (["evaluate", "--pred", preds, "--dataset", "nosuch:val"], "unknown dataset", "known:"),
        (["evaluate", "--pred", preds, "--dataset", "cs:val", "--data-root", tmp_path / "empty"], "expected layout: cityscapes/leftImg8bit", "ZODI_DATA"),
        (["evaluate", "--pred", preds, "--dataset", "acdc:smog:val"], "unknown split or condition 'smog'", "fog, night, rain, snow"),
        (["evaluate", "--pred", preds, "--dataset", "toy:fog:val"], "have no prediction", "GOPR"),
        (["evaluate", "--pred", preds, "--dataset", "toy:clear:train"], "have no prediction", "toytown_"),
        (["info", notzodi], "not a zodi artifact", ""),
        (["info", tmp_path / "junk.h5"], "is not an HDF5 file", "written by a zodi command"),
        (["baseline", "predict", "--model", model, "--src", "toy:clear:val", "--out", tmp_path / "s.h5", "--shard", "5/2"], "out of range", "0 <= i < N"),
        (["baseline", "predict", "--model", model, "--src", "toy:clear:val", "--out", tmp_path / "s.h5", "--shard", "a/b"], "not of the form i/N", ""),
        (["baseline", "predict", "--model", tmp_path / "nomodel.npz", "--src", "toy:clear:val", "--out", tmp_path / "s.h5"], "does not exist", "baseline fit"),
        (["evaluate", "--config", tmp_path / "bad.yaml", "--pred", preds, "--dataset", "toy:clear:val"], "unknown option(s) for 'evaluate': bogus", ""),
        (["evaluate", "--config", tmp_path / "broken.yaml", "--pred", preds, "--dataset", "toy:clear:val"], "not valid YAML", "line"),
        (["merge", tmp_path / "never.h5"], "no shards of", "--shard i/N"),
        (["evaluate", "--pred", tmp_path / "nopreds", "--dataset", "folder:" + str(tmp_path / "noimgs")], "image folder", "does not exist"),
        (["baseline", "predict", "--model", model, "--src", "toy:clear:val", "--out", preds, "--batch-size", "3"], "", ""),
    ]
    for args, must, also in cases[:-1]:
        code, out, err = cli(*args)
        _one_error_line(code, err, 1, must)
        assert also in err, (args, err)
    # a re-run with another batch size reuses everything: not an error
    code, out, err = cli(*cases[-1][0])
    assert code == 0 and "0 computed, 4 reused" in out


def test_settings_mismatch_and_incomplete_input_refused(cli, toy_env, tmp_path, baseline_preds):
    model, preds = baseline_preds
    code, _, err = cli("baseline", "predict", "--model", model, "--src", "toy:fog:val", "--out", preds)
    _one_error_line(code, err, 1, "was made with other settings: src: 'toy:clear:val' -> 'toy:fog:val'")
    assert "--overwrite" in err
    assert cli("baseline", "predict", "--model", model, "--src", "toy:clear:val", "--out", tmp_path / "half.h5", "--shard", "0/2")[0] == 0
    code, _, err = cli("evaluate", "--pred", tmp_path / "half.h5", "--dataset", "toy:clear:val")
    _one_error_line(code, err, 1, "its shards exist: run 'zodi merge")
    code, _, err = cli("evaluate", "--pred", tmp_path / "half.shard-0-of-2.h5", "--dataset", "toy:clear:val")
    _one_error_line(code, err, 1, "2 of 4 ground-truth images of toy:clear:val have no prediction")
    # an interrupted artifact is refused downstream unless --allow-partial
    from zodicli.store import Artifact, ArtifactWriter

    full = Artifact(preds)
    with ArtifactWriter(tmp_path / "cut.h5", "baseline predict", {}, {}, full.keys) as w:
        w.write(full.keys[:1], {"preds": [full.get("preds", 0)]})
    code, _, err = cli("evaluate", "--pred", tmp_path / "cut.h5", "--dataset", "toy:clear:val")
    _one_error_line(code, err, 1, "cut.h5 is incomplete (1/4 items)")
    code, out, err = cli("evaluate", "--pred", tmp_path / "cut.h5", "--dataset", "toy:clear:val", "--allow-partial", "--json")
    assert code == 0 and json.loads(out)["n_images"] == 1
    code, _, err = cli("merge", tmp_path / "half.h5")
    _one_error_line(code, err, 1, "1 of 2 shards are missing: half.shard-1-of-2.h5")


def test_usage_errors_exit_2(cli):
    code, _, err = cli("evaluate", "--pred", "p.h5")
    assert code == 2 and "Missing option '--dataset'" in err
    code, _, err = cli("evaluate", "--dataset", "cs:val")
    assert code == 2 and "exactly one of --pred" in err
    assert cli("nosuchcommand")[0] == 2


def test_internal_errors_are_one_line_unless_debug():
    code = ("import zodicli.store.artifact as a\n"
            "a.library_versions = lambda: 1 / 0\n"
            "from zodicli.cli import main\n"
            "main(['env'])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "zodi: internal error: ZeroDivisionError: division by zero (re-run with ZODI_DEBUG=1 for a traceback and report it)"]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "ZODI_DEBUG": "1"})
    assert r.returncode == 1 and "Traceback" in r.stderr and "ZeroDivisionError" in r.stderr


def test_library_chatter_is_off_unless_debug_and_explicit_settings_win(monkeypatch):
    from zodicli.errors import quiet_libraries

    names = ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY", "TRANSFORMERS_NO_ADVISORY_WARNINGS", "ZODI_DEBUG")
    for name in names:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DIFFUSERS_VERBOSITY", "info")
    quiet_libraries()
    assert [os.environ.get(n) for n in names] == ["error", "info", "1", None]
    for name in names:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ZODI_DEBUG", "1")
    quiet_libraries()
    assert [os.environ.get(n) for n in names[:3]] == [None, None, None]


def test_config_file_supplies_options_and_command_line_wins(cli, toy_env, tmp_path, baseline_preds):
    _, preds = baseline_preds
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"pred: {preds}\ndataset: toy:fog:val\nreport-dir: {tmp_path / 'rep'}\n")
    code, out, _ = cli("evaluate", "--config", cfg, "--dataset", "toy:clear:val", "--json")
    assert code == 0
    res = json.loads(out)
    assert res["dataset"] == "toy:clear:val" and res["report_dir"] == str(tmp_path / "rep")


def test_evaluate_end_to_end_writes_report(cli, toy_env, baseline_preds):
    _, preds = baseline_preds
    code, out, _ = cli("evaluate", "--pred", preds, "--dataset", "toy:clear:val", "--json")
    assert code == 0
    res = json.loads(out)
    rep = preds.with_name("p.eval")
    saved = json.loads((rep / "metrics.json").read_text())
    cm = np.load(rep / "confusion.npy")
    assert cm.shape == (19, 20) and int(cm.sum()) == res["n_pixels"] == saved["n_pixels"]
    assert saved["miou"] == pytest.approx(res["miou"]) and res["n_images"] == 4
    assert (rep / "confusion.png").stat().st_size > 1000
    assert (rep / "confusion.csv").read_text().splitlines()[0].endswith(",bicycle,ignore")
    code, out, _ = cli("evaluate", "--pred", preds, "--dataset", "toy:clear:val")
    assert "mIoU" in out and f"{res['miou']:6.2f}" in out


def test_outputs_do_not_depend_on_batch_size_or_sharding(cli, toy_env, tmp_path, baseline_preds, monkeypatch):
    from zodicli.store import Artifact

    model, preds = baseline_preds
    args = ["baseline", "predict", "--model", model, "--src", "toy:clear:val"]
    assert cli(*args, "--out", tmp_path / "b1.h5", "--batch-size", "1")[0] == 0
    for i in range(3):
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(i))
        monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
        code, out, err = cli(*args, "--out", tmp_path / "sh.h5", "--shard", "auto", "--batch-size", "2", "--json")
        assert code == 0 and json.loads(out)["out"].endswith(f"sh.shard-{i}-of-3.h5"), err
    assert cli("merge", tmp_path / "sh.h5")[0] == 0
    ref = Artifact(preds)
    for other in (Artifact(tmp_path / "b1.h5"), Artifact(tmp_path / "sh.h5")):
        assert other.keys == ref.keys and other.meta["fingerprint"] == ref.meta["fingerprint"]
        for f in ("preds", "confidence"):
            assert all(np.array_equal(ref.get(f, k), other.get(f, k)) for k in ref.keys)


def test_artifact_reader_survives_fork(tmp_path):
    import multiprocessing as mp

    from zodicli.store import Artifact, ArtifactWriter

    with ArtifactWriter(tmp_path / "a.h5", "t", {}, {}, ["a", "b"]) as w:
        w.write(["a", "b"], {"x": [np.arange(3), np.arange(3) * 2]})
    art = Artifact(tmp_path / "a.h5")
    art.get("x", "a")                                   # the parent has an open handle
    with mp.get_context("fork").Pool(2) as pool:
        sums = pool.map(_sum_item, [(art, "a"), (art, "b")])
    assert sums == [3, 6]


def _sum_item(arg):
    art, key = arg
    return int(art.get("x", key).sum())


def test_presets_ship_inside_the_package_and_python_m_works(tmp_path):
    """An installed wheel has no recipes/ beside it: presets come from the package (importlib.resources).
    CI also installs the built wheel in a fresh venv and runs it from an empty folder (.ci/wheel-smoke)."""
    env = {k: v for k, v in os.environ.items() if k != "ZODI_PRESETS"}
    r = subprocess.run([sys.executable, "-m", "zodicli", "models", "list", "--json"], cwd=tmp_path, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert {"sd15", "sd14", "sd21-base", "controlnet-seg"} <= {row["name"] for row in listed["diffusion"]}
    from zodicli import presets
    from zodicli.seg.models import model_names

    assert {row["name"] for row in listed["segmenters"]} == set(model_names())    # catalogued = registered
    assert presets.domains()["fog"] == {"prompt": "driving in fog", "strength": 0.6, "steps": 20}


def test_batch_logs_get_plain_progress_lines(cli, toy_env, tmp_path, baseline_preds, monkeypatch):
    """stderr is not a terminal here (as in a Slurm log): no bar, but a line every ZODI_PROGRESS_SECONDS."""
    import re

    monkeypatch.setenv("ZODI_PROGRESS_SECONDS", "0")
    model = tmp_path / "bl.npz"
    assert cli("baseline", "fit", "--train", "toy:clear:train", "--out", model)[0] == 0
    code, _, err = cli("baseline", "predict", "--model", model, "--src", "toy:fog:val", "--batch-size", "2", "--out", tmp_path / "lines.h5")
    lines = err.strip().splitlines()
    assert code == 0 and len(lines) == 3, err                    # after each batch of 2, and at the end
    assert re.fullmatch(r"zodi baseline predict: 2/4 items \(50\.0 %\), [\d.e+]+ item/s, \d\d:\d\d:\d\d left", lines[0])
    assert lines[-1].startswith("zodi baseline predict: 4/4 items (100.0 %)") and lines[-1].endswith("00:00:00 left")
    monkeypatch.delenv("ZODI_PROGRESS_SECONDS")
    code, _, err = cli("baseline", "predict", "--model", model, "--src", "toy:fog:val", "--out", tmp_path / "quiet.h5")
    assert code == 0 and err == ""                                # short runs stay quiet
