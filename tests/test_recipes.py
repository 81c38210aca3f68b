"""Every recipe runs end to end on the toy city with the committed toy diffusion model: the three
paper tables (smallest sizes, one seed), the demo (a few images and iterations) and the toy check."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def run(*cmd, env_extra=None, ok=(0,)):
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    r = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert r.returncode in ok, r.stderr[-3000:]
    return r.stdout


@pytest.mark.parametrize("recipe, rows", [("zodi", ["fog"]), ("madm", ["infrared", "event"]),
                                          ("diff", ["toy_fog_val", "toy_night_val"])])
def test_paper_table_recipe_on_the_toy_city(tmp_path, recipe, rows):
    out = run("make", "-s", "-f", f"recipes/{recipe}/table.mk", "toy", f"OUT={tmp_path}/t", "TOY_DOMAINS=fog", "TOY_SEEDS=1")
    table = (tmp_path / "t-toy/table.md").read_text()
    assert table.strip() in out
    body = [line.split(" | ") for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [cells[0].strip("| ") for cells in body] == rows
    for cells in body:
        assert 0 <= float(cells[1]) <= 100
    if recipe == "madm":
        assert [cells[2].strip(" |") for cells in body] == ["62.23", "56.31"]     # published, beside ours


def test_paper_table_targets_print_their_commands():
    out = run("make", "-n", "table-zodi")
    assert "zodi translate --src cs:train --domain game --model sd15 --controlnet controlnet-seg" in out
    assert "--model refinenet_lw_r50" in out and "--dataset gta5:val" in out
    out = run("make", "-n", "table-madm")                 # the authors' online scheme
    assert "--online-pl --dplg-t0 50 --dplg-total 8000" in out and "--lplr-weight 20" in out and "zodi pseudolabel" not in out
    out = run("make", "-n", "-f", "recipes/madm/table.mk", "MODE=offline")
    assert "zodi pseudolabel" in out and "--dplg --dplg-iter 2500" in out and "--dplg-t0 50 --dplg-total 8000" in out
    out = run("make", "-n", "table-diff")
    assert "zodi train-seg --backbone diff-online --sd-model sd21-base --source gta5" in out and "extract-features" not in out
    out = run("make", "-n", "-f", "recipes/diff/table.mk", "MODE=cached")
    assert "zodi extract-features --src gta5 --model sd21-base --blocks diff" in out


def test_demo_runs_and_a_second_run_reuses_everything(tmp_path):
    env = {"ITERS": "4", "N_TRAIN": "8", "N_VAL": "4", "DOMAINS": "fog"}
    out = run("bash", "recipes/demo/run.sh", tmp_path / "demo", "1", env_extra=env)
    metrics = json.loads((tmp_path / "demo/metrics.json").read_text())
    assert [r["method"] for r in metrics["results"]] == ["source-only", "photometric augmentation", "ZoDi", "ZoDi + photometric",
                                                          "ZoDi + pseudo-labels", "oracle (target labels)"]
    for r in metrics["results"]:
        assert r["condition"] == "fog" and r["seed"] == 1 and 0 <= r["miou"] <= 100 and 0 <= r["estimate"] <= 100
        folder = {"source-only": "source-only", "photometric augmentation": "photometric"}.get(r["method"])
        if folder:          # the table holds what evaluate wrote
            assert r["miou"] == round(json.loads((tmp_path / f"demo/seed1/{folder}/metrics-fog.json").read_text())["miou"], 2)
    assert (tmp_path / "demo/table.md").read_text().splitlines()[0] == "| method | fog | fog estimate |"
    assert (tmp_path / "demo/contact_sheet.png").stat().st_size > 0
    stamp = (tmp_path / "demo/seed1/zodi-fog/last.pt").stat().st_mtime_ns
    again = run("bash", "recipes/demo/run.sh", tmp_path / "demo", "1", env_extra=env)
    assert (tmp_path / "demo/seed1/zodi-fog/last.pt").stat().st_mtime_ns == stamp     # nothing retrained
    assert again == out                                                              # the same table
    # A changed toy model (or recipes/toy/*.yaml) redoes the translations and segmenters, not the city:
    (tmp_path / "demo/model.stamp").write_text("another model\n")
    fake = tmp_path / "bin"                                                          # a zodi that logs and fails
    fake.mkdir()
    (fake / "zodi").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\nexit 3\n')
    (fake / "zodi").chmod(0o755)
    path = f"{fake}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    run("bash", "recipes/demo/run.sh", tmp_path / "demo", "1", env_extra={**env, "PATH": path}, ok=(3,))
    assert (tmp_path / "calls").read_text().startswith("translate --config recipes/toy/fog.yaml")
    assert not list((tmp_path / "demo/synth").glob("*.h5")) and not (tmp_path / "demo/seed1").exists()
    assert (tmp_path / "demo/toy.txt.done").exists() and (tmp_path / "demo/model.stamp").read_text() != "another model\n"


def test_methods_runs_its_personalisation_rows_on_thermal(tmp_path):
    env = {"ITERS": "2", "N_TRAIN": "4", "N_VAL": "2", "FT_STEPS": "2", "KS": "2", "STYLE_ITERS": "5"}
    out = run("bash", "recipes/methods/run.sh", tmp_path / "m", "1", env_extra=env)
    metrics = json.loads((tmp_path / "m/metrics.json").read_text())
    rows = ["source-only", "zodi-prompt", "zodi-lora-2", "oracle"]
    assert [r["method"] for r in metrics["results"]] == rows
    for r in metrics["results"]:
        assert r["condition"] == "thermal" and r["seed"] == 1 and 0 <= r["miou"] <= 100
        assert r["miou"] == json.loads((tmp_path / f"m/seed1/{r['method']}/metrics-thermal.json").read_text())["miou"]
    assert metrics["settings"]["finetune"]["lora-2"]["num_images"] == 2
    assert (tmp_path / "m/table.md").read_text() in out
    from zodicli.store import Artifact

    with Artifact(tmp_path / "m/synth/zodi-lora-2-train.h5") as a:
        assert a.meta["inputs"]["lora"].startswith(f"{tmp_path / 'm/lora-2'}@") and len(a) == 4
    assert run("bash", "recipes/methods/run.sh", tmp_path / "m", "1", env_extra=env) == out     # all cached


def test_demo_table_means_and_gap():
    spec = importlib.util.spec_from_file_location("demo_report", ROOT / "recipes/demo/report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    miou = {"source-only": (10, 20), "photometric augmentation": (20, 30), "ZoDi": (30, 50), "ZoDi + photometric": (40, 40),
            "ZoDi + pseudo-labels": (35, 45), "oracle (target labels)": (60, 70)}
    results = [{"method": m, "condition": "fog", "seed": s + 1, "miou": v[s], "estimate": v[s] + 1}
               for m, v in miou.items() for s in (0, 1)]
    text = report.table(results)
    assert "| ZoDi | 40.0 ± 14.1 | 41.0 ± 14.1 |" in text                          # mean 40, stdev of (30, 50)
    assert "| ZoDi + photometric | 40.0 ± 0.0 | 41.0 ± 0.0 |" in text
    # ZoDi - source-only = 25; oracle - source-only = 50: half the gap
    assert "fog: ZoDi − source-only +25.0, ZoDi − photometric +15.0; ZoDi closes 50 % of" in text


def test_toy_check_reports_its_figures_and_gates(tmp_path):
    out = run(sys.executable, "recipes/toy/check.py", tmp_path / "c", "--iters", "4", "--n-train", "4", "--n-val", "4", "--style-iters", "20",
              ok=(0, 1))
    rep = json.loads((tmp_path / "c/toy_check.json").read_text())
    assert set(rep["vae_psnr_db"]) == {"clear", "fog", "night", "rain", "snow"}
    assert all(10 < v < 60 for v in rep["vae_psnr_db"].values())
    assert rep["gates"]["vae_psnr>=28"] == (min(rep["vae_psnr_db"].values()) >= 28)
    for t in ("fog", "night"):
        lay = rep["layout_kept"][t]
        assert lay["ratio"] == pytest.approx(lay["translated_miou"] / lay["real_miou"], abs=1e-3)
        assert set(lay["class_iou_percent"]) == set(lay["class_ratio"])          # (real, translated) IoU per class
        for c, (real, trans) in lay["class_iou_percent"].items():
            assert 0 <= real <= 100 and 0 <= trans <= 100
            if real >= 1:                                                          # percent, not fractions
                assert abs(lay["class_ratio"][c] * real - trans) <= 0.1 + 0.05 * lay["class_ratio"][c], c
        lo, hi = lay["ratio_90_interval"]
        assert lo <= lay["ratio"] <= hi
        assert set(lay["class_ratio_90_interval"]) <= set(lay["class_ratio"])
        assert all(0 <= a <= b for a, b in lay["class_ratio_90_interval"].values())
        shares = rep["style"]["translations"][t]
        assert math.isclose(sum(shares.values()), 1.0, abs_tol=0.01)
    assert "gates:" in out and ("MISS" in out) == (not all(rep["gates"].values()))


def _load_recipe(name: str):
    """recipes/toy/NAME.py as a module (recipes are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / f"recipes/toy/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_toy_check_forgets_results_of_another_model_or_city(tmp_path):
    check = _load_recipe("check")
    made = ["fog-val.h5", "fog-val.h5.parts/part-0.h5", "preds-night-translated.h5", "preds-night-translated.eval/m.json",
            "preds-fog-real.h5", "seg/last.pt"]

    def make():
        for name in made:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text("x")

    def left():
        return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                      if p.is_file() and p.name not in ("model.stamp", "toy.json"))

    (tmp_path / "toy").mkdir()
    (tmp_path / "toy/toy.json").write_text('{"n_val": 40}')
    make()
    check.forget_stale_results(tmp_path)                          # no stamp: unknown weights, forgotten
    assert left() == ["seg/last.pt"]
    make()
    check.forget_stale_results(tmp_path)                          # the same weights and city: kept
    assert len(left()) == len(made)
    (tmp_path / "toy/toy.json").write_text('{"n_val": 120}')      # a bigger val set: the scores must be redone
    check.forget_stale_results(tmp_path)
    assert left() == ["seg/last.pt"]
    make()
    check.forget_stale_results(tmp_path)
    stamp = (tmp_path / "model.stamp").read_text()
    (tmp_path / "model.stamp").write_text(stamp.replace(stamp.split()[0], "other-weights"))
    check.forget_stale_results(tmp_path)
    assert left() == ["seg/last.pt"]
    make()
    other = tmp_path.parent / "other-model"                      # --model: a training run's stack
    for sub in ("sd", "controlnet"):
        (other / sub).mkdir(parents=True, exist_ok=True)
        (other / sub / "w.safetensors").write_text(sub)
    check.forget_stale_results(tmp_path, other)
    assert left() == ["seg/last.pt"]


def test_toy_check_yaml_fingerprint_ignores_comments(tmp_path):
    check = _load_recipe("check")
    a, b, c = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"
    a.write_text("domain: night\nstrength: 1.0\n")
    b.write_text("# chosen on the tuning city\nstrength: 1.0   # was 0.8\ndomain: night\n")
    c.write_text("domain: night\nstrength: 0.9\n")
    assert check.yaml_fingerprint(a) == check.yaml_fingerprint(b) != check.yaml_fingerprint(c)


def test_toy_check_bootstrap_interval_by_hand():
    check = _load_recipe("check")
    perfect = np.array([[10, 0, 0], [0, 10, 0]])          # two classes, mIoU 100
    half = np.array([[10, 0, 0], [10, 0, 0]])             # class 1 read as 0: IoU 0.5 and 0, mIoU 25
    real = np.stack([perfect] * 6)
    assert check.bootstrap_ratio(real, real, ["a", "b"]) == {"miou": [1.0, 1.0], "class": {"a": [1.0, 1.0], "b": [1.0, 1.0]}}
    boot = check.bootstrap_ratio(real, np.stack([perfect] * 3 + [half] * 3), ["a", "b"])
    # the whole set: IoU 60/90 and 30/60, ratio 0.583; redraws range from 0.25 (all half) to 1
    assert 0.25 < boot["miou"][0] < 0.583 < boot["miou"][1] < 1.0
    # class b alone: 0 (all half) to 1 (all perfect), 0.5 on the whole set; class a from 0.5 to 1
    assert 0 <= boot["class"]["b"][0] < 0.5 < boot["class"]["b"][1] <= 1
    assert 0.5 <= boot["class"]["a"][0] < 2 / 3 < boot["class"]["a"][1] <= 1


def test_lamp_proxy_by_hand():
    probe = _load_recipe("lamp_probe")
    lb = np.zeros((2, 3), np.uint8)
    lb[0, :2] = 6                                          # two traffic-light pixels
    dark, lit = np.zeros((2, 3, 3), np.uint8), np.zeros((2, 3, 3), np.uint8)
    dark[0, 0] = 51                                        # grey 0.2
    lit[0, 1] = (255, 0, 0)                                # a red lamp: 0.299
    lit[1, 2] = 255                                        # white outside the traffic light: ignored
    assert probe.lamp_proxy([dark], [lb]) == pytest.approx(0.2)
    assert probe.lamp_proxy([dark, lit, lit], [lb] * 3) == pytest.approx(0.299)     # the median image


def test_lamp_probe_keeps_the_lamp_through_the_vae_and_from_a_small_t(tmp_path):
    """The committed VAE keeps the night lamps (real 0.40, VAE 0.39 on 29 tuning-city images; a median over
    a handful of images moves by 0.05), and DDIM from a small t changes them little."""
    run(sys.executable, "recipes/toy/lamp_probe.py", tmp_path / "p", "--n-val", "16", "--from", "1,999", "--stride", "200")
    rep = json.loads((tmp_path / "p/lamp_probe.json").read_text())
    proxy = rep["proxy"]
    assert rep["images"] >= 2 and set(proxy) == {"real", "vae", "from t=1", "from t=999"}
    assert proxy["real"] > 0.2                             # lit lamps, not dark boxes
    assert proxy["vae"] > 0.8 * proxy["real"]
    assert abs(proxy["from t=1"] - proxy["vae"]) < 0.05


def test_toy_train_sitting_that_stops_midway_leaves_a_checkpoint_and_the_model(tmp_path):
    """recipes/toy/train.sh with a stand-in zodi that stops at UNet step 900: the sitting's weights go to
    the checkpoint folder, the committed model stays, and a fresh machine continues from the checkpoint."""
    fake = tmp_path / "bin/zodi"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$*" >> "$CALLS"\n'           # zodi models train-toy --out RUN ...: its state appears
                    '[ -f "$4/state.later" ] && mv "$4/state.later" "$4/state.pt"\n'
                    'echo "run: stage unet, step 900; --model run/sd --controlnet run/controlnet"\n')
    fake.chmod(0o755)
    model = sorted((p.relative_to(ROOT), p.stat().st_mtime_ns) for p in (ROOT / "recipes/toy/model").rglob("*"))
    path = os.pathsep.join([str(fake.parent), str(Path(sys.executable).parent), os.environ["PATH"]])   # export.sh's python
    env = {**os.environ, "PATH": path, "CALLS": str(tmp_path / "calls")}
    ckpt = tmp_path / "ckpt"
    final, v7 = (int(re.search(rf"^{name}=(\d+)$", (ROOT / "recipes/toy/train.sh").read_text(), re.M).group(1))
                 for name in ("FINAL", "V7"))
    assert final > v7 > 900                         # the sitting stops in the first stage: no second call
    for run in ("run", "fresh"):                    # a sitting, then another on a machine without its RUN
        for name in ("v6", "sd/vae", "controlnet"):     # (v6 given: no `git archive` in a shallow clone)
            (tmp_path / run / name).mkdir(parents=True)
        (tmp_path / run / "sd/vae/config.json").write_text("{}")
        torch.save({"stage": "unet", "step": 900, "vae": {}, "unet": {}, "cn": {}, "rare_class": [[0, 0.01]]},
                   tmp_path / run / "state.later")
        r = subprocess.run(["bash", "recipes/toy/train.sh", tmp_path / run, "30", ckpt], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=False)
        assert r.returncode == 0, r.stderr
        assert f"stopped at UNet step 900 of {final}" in r.stderr
        assert (ckpt / "STEPS").read_text() == "900\n" and (ckpt / "sd/vae/config.json").is_file()
        assert json.loads((ckpt / "TRAINING.json").read_text()) == {"rare_class": [[0, 0.01]]}
    made = (tmp_path / "calls").read_text().splitlines()
    assert "--init-from" not in made[0] and f"--init-from {ckpt}" in made[1]
    assert len(made) == 2 and f"--unet-from {tmp_path / 'run/v6'}" in made[0] and f"--steps {v7} " in made[0]
    assert sorted((p.relative_to(ROOT), p.stat().st_mtime_ns) for p in (ROOT / "recipes/toy/model").rglob("*")) == model
    assert not (ROOT / "recipes/toy/model.tmp").exists()


def test_toy_train_continues_into_the_second_stage_with_its_own_loss(tmp_path):
    """train.sh: once the first call reaches V7, a second call goes on to FINAL with the class-weighted loss
    and the night focus (a stand-in zodi reports V7, then a step short of FINAL: a checkpoint, no model)."""
    text = (ROOT / "recipes/toy/train.sh").read_text()
    final, v7 = (int(re.search(rf"^{name}=(\d+)$", text, re.M).group(1)) for name in ("FINAL", "V7"))
    fake = tmp_path / "bin/zodi"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$*" >> "$CALLS"\n'
                    f'step={v7}; grep -q -- --class-weight "$CALLS" && step={final - 100}\n'
                    'python -c "import sys, torch; torch.save({\'stage\': \'unet\', \'step\': int(sys.argv[2]), \'vae\': {}, '
                    '\'unet\': {}, \'cn\': {}}, sys.argv[1])" "$4/state.pt" $step\n'
                    'echo "run: stage unet, step $step; --model run/sd --controlnet run/controlnet"\n')
    fake.chmod(0o755)
    model = sorted((p.relative_to(ROOT), p.stat().st_mtime_ns) for p in (ROOT / "recipes/toy/model").rglob("*"))
    path = os.pathsep.join([str(fake.parent), str(Path(sys.executable).parent), os.environ["PATH"]])
    for name in ("v6", "sd/vae", "controlnet"):
        (tmp_path / "run" / name).mkdir(parents=True)
    r = subprocess.run(["bash", "recipes/toy/train.sh", tmp_path / "run", "30", tmp_path / "ckpt"], cwd=ROOT,
                       env={**os.environ, "PATH": path, "CALLS": str(tmp_path / "calls")}, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    first, second = (tmp_path / "calls").read_text().splitlines()
    assert f"--steps {v7} " in first and "--class-weight" not in first and "--focus" not in first
    assert f"--steps {final} " in second and "--class-weight 0.5" in second and "--focus night:bus,traffic light,fence" in second
    assert f"stopped at UNet step {final - 100} of {final}" in r.stderr
    assert (tmp_path / "ckpt/STEPS").read_text() == f"{final - 100}\n"
    # A fresh machine, with that checkpoint past V7: both calls start from it.
    for name in ("v6", "sd/vae", "controlnet"):
        (tmp_path / "fresh" / name).mkdir(parents=True)
    r = subprocess.run(["bash", "recipes/toy/train.sh", tmp_path / "fresh", "30", tmp_path / "ckpt"], cwd=ROOT,
                       env={**os.environ, "PATH": path, "CALLS": str(tmp_path / "calls")}, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    again = (tmp_path / "calls").read_text().splitlines()[2:]
    assert len(again) == 2 and all(f"--init-from {tmp_path / 'ckpt'}" in call for call in again)
    assert sorted((p.relative_to(ROOT), p.stat().st_mtime_ns) for p in (ROOT / "recipes/toy/model").rglob("*")) == model


def test_toy_export_carries_the_given_cards_history_and_names_the_start(tmp_path):
    """export.sh RUN DST CARD: the card's History (the sittings so far) goes on, and UNET_FROM names the
    networks the UNet stage started from instead of the run's scratch path."""
    run = tmp_path / "run"
    for name in ("sd/vae", "controlnet"):
        (run / name).mkdir(parents=True)
    torch.save({"stage": "unet", "step": 12, "vae": {}, "unet": {}, "cn": {}, "unet_from": str(run / "v6"),
                "focus": [[10, "night:bus,wall"], [12, ""]],                       # the second never took effect
                "class_weight": [[11, 0.5]]}, run / "state.pt")
    card = tmp_path / "old_card.md"
    card.write_text("# old\n\n## History and what limits it\n- v7: trained in two sittings.\n\n## Quality\nold figures\n")
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])      # export.sh's python
    r = subprocess.run(["bash", "recipes/toy/export.sh", run, tmp_path / "model", card], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, "PATH": path, "UNET_FROM": "v6 (commit abc1234)"}, check=False)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "model/MODEL_CARD.md").read_text()
    assert "## History and what limits it\n- v7: trained in two sittings.\n\n## Quality\nRun `make toy-check`" in text
    assert "text model of v6 (commit abc1234), their input and output convolutions" in text and str(run) not in text
    assert (tmp_path / "model/STEPS").read_text() == "12\n" and not (tmp_path / "model.tmp").exists()
    assert ("; from step 10, a quarter of each batch drawn from night images holding bus or wall; from step 11, each pixel's"
            " noise loss weighted by its class's rarity to the power 0.5, EMA") in text
    training = json.loads((tmp_path / "model/TRAINING.json").read_text())
    assert training["focus"] == [[10, "night:bus,wall"]] and training["class_weight"] == [[11, 0.5]]


def test_slurm_array_keeps_quoted_arguments_and_passes_sbatch_options(tmp_path):
    """A stub sbatch records its argv; each --wrap, run by a shell as Slurm does, must give zodi the
    arguments exactly as the user quoted them."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls.jsonl"
    (bindir / "sbatch").write_text(f'#!{sys.executable}\nimport json, sys\n'
                                   f'open({str(log)!r}, "a").write(json.dumps(sys.argv[1:]) + "\\n")\nprint("4242")\n')
    (bindir / "sbatch").chmod(0o755)
    (bindir / "zodi").write_text(f'#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n')
    (bindir / "zodi").chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
           "SBATCH_ARGS": "--gres=gpu:1 --partition=gpu --time=04:00:00"}
    r = subprocess.run(["bash", "recipes/slurm/array.sh", "8", "out/syn it.h5", "translate", "--src", "gta", "--prompt",
                        "snowy street", "--negative-prompt", "it's \"bad\""], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    shards, merge = (json.loads(line) for line in log.read_text().splitlines())
    assert shards[:4] == ["--parsable", "--array=0-7", "--job-name=zodi-shards", "--gres=gpu:1"]
    assert "--partition=gpu" in shards and "--time=04:00:00" in shards and "--gres=gpu:1" in merge
    assert merge[0] == "--dependency=afterok:4242"
    for argv, expected in ((shards, ["translate", "--src", "gta", "--prompt", "snowy street", "--negative-prompt", "it's \"bad\"",
                                     "--out", "out/syn it.h5", "--shard", "auto"]),
                           (merge, ["merge", "out/syn it.h5"])):
        wrap = next(a for a in argv if a.startswith("--wrap="))[len("--wrap="):]
        ran = subprocess.run(["bash", "-c", wrap], env=env, capture_output=True, text=True)
        assert json.loads(ran.stdout) == expected
