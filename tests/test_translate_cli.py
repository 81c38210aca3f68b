"""invert / translate through the command line on the toy city with the tiny stack."""
from __future__ import annotations

import json

import numpy as np
import pytest

from zodicli.store import Artifact


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from zodicli.diffusion.tiny import make_tiny

    root = tmp_path_factory.mktemp("zmodels")
    make_tiny(root / "tiny")
    return root


@pytest.fixture
def env(models, toy_env, monkeypatch):
    monkeypatch.setenv("ZODI_MODELS", str(models))
    return models


TINY = ["--model", "tiny", "--controlnet", "tiny-controlnet", "--short-side", "32"]


def same(p, q, fields=("images", "labels")):
    a, b = Artifact(p), Artifact(q)
    return a.keys == b.keys and all(np.array_equal(a.get(f, k), b.get(f, k)) for f in fields for k in a.keys)


def test_translate_toy_as_written(cli, env, tmp_path):
    code, out, err = cli("translate", "--src", "toy", "--prompt", "driving in fog", *TINY, "--steps", "10",
                         "--out", tmp_path / "fog.h5", "--preview", "2", "--json")
    assert code == 0, err
    s = json.loads(out)
    a = Artifact(tmp_path / "fog.h5")
    assert s["items"] == 8 and a.complete and a.keys[0].startswith("toytown_")
    assert a.get("images", 0).shape == (32, 64, 3) and a.get("labels", 0).shape == (32, 64)
    assert a.meta["settings"]["prompt"] == "driving in fog" and a.meta["inputs"]["model"].startswith("tiny@")
    assert (tmp_path / "fog.preview.png").stat().st_size > 0
    code, out, _ = cli("translate", "--src", "toy", "--prompt", "driving in fog", *TINY, "--steps", "10", "--out", tmp_path / "fog.h5")
    assert "0 translated, 8 reused" in out
    code, _, err = cli("translate", "--src", "toy", "--prompt", "driving in snow", *TINY, "--steps", "10", "--out", tmp_path / "fog.h5")
    assert code == 1 and "prompt: 'driving in fog' -> 'driving in snow'" in err


def test_new_weights_at_the_same_path_are_not_resumed(cli, env, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(env / "tiny/sd", tmp_path / "m")
    args = ["translate", "--src", "toy:clear:val", "--domain", "fog", "--model", tmp_path / "m", "--controlnet", "tiny-controlnet",
            "--short-side", "32", "--steps", "4", "--out", tmp_path / "t.h5"]
    code, out, err = cli(*args)
    assert code == 0, err
    (tmp_path / "m/MODEL_CARD.md").write_text("a model card is not the model")
    code, out, err = cli(*args)
    assert code == 0 and "0 translated" in out, err
    weights = tmp_path / "m/unet/diffusion_pytorch_model.safetensors"     # "retrained" in place
    w = load_file(weights)
    w = {k: v + 1 if i == 0 else v for i, (k, v) in enumerate(w.items())}
    save_file(w, weights)
    code, out, err = cli(*args)
    assert code == 1 and "inputs changed: model" in err


def test_tree_fingerprint_by_hand(tmp_path):
    import hashlib

    from zodicli.store.fingerprint import tree_fingerprint

    (tmp_path / "unet").mkdir()
    (tmp_path / "unet/w.bin").write_bytes(b"abc")
    (tmp_path / "a.json").write_bytes(b"{}")
    expected = hashlib.sha256(b"a.json\0{}unet/w.bin\0abc").hexdigest()[:16]
    assert tree_fingerprint(tmp_path) == expected
    (tmp_path / "README.md").write_text("notes")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache/x").write_text("y")
    assert tree_fingerprint(tmp_path) == expected
    assert tree_fingerprint(tmp_path / "unet/w.bin") == hashlib.sha256(b"abc").hexdigest()[:16]


def test_batch_size_and_sharding_do_not_change_outputs(cli, env, tmp_path):
    args = ["translate", "--src", "toy:clear:val", "--domain", "fog", *TINY, "--steps", "8"]
    assert cli(*args, "--out", tmp_path / "b1.h5", "--batch-size", "1")[0] == 0
    assert cli(*args, "--out", tmp_path / "b4.h5", "--batch-size", "4")[0] == 0
    assert same(tmp_path / "b1.h5", tmp_path / "b4.h5")
    for i in range(2):
        assert cli(*args, "--out", tmp_path / "sh.h5", "--shard", f"{i}/2", "--batch-size", "2")[0] == 0
    assert cli("merge", tmp_path / "sh.h5")[0] == 0
    assert same(tmp_path / "b1.h5", tmp_path / "sh.h5")


def test_killed_translate_resumes_to_the_same_output(cli, env, tmp_path, monkeypatch):
    from zodicli.diffusion import models as M

    args = ["translate", "--src", "toy:clear:val", "--domain", "night", *TINY, "--steps", "6", "--batch-size", "1"]
    assert cli(*args, "--out", tmp_path / "full.h5")[0] == 0
    real, calls = M.Stack.decode, []

    def dies_on_third(self, z):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, z)

    monkeypatch.setattr(M.Stack, "decode", dies_on_third)
    code, _, err = cli(*args, "--out", tmp_path / "cut.h5")
    assert code == 130 and "finished items are kept" in err
    assert len(Artifact(tmp_path / "cut.h5", allow_partial=True)) == 2
    monkeypatch.setattr(M.Stack, "decode", real)
    code, out, _ = cli(*args, "--out", tmp_path / "cut.h5")
    assert code == 0 and "2 translated, 2 reused" in out
    assert same(tmp_path / "full.h5", tmp_path / "cut.h5")


@pytest.mark.parametrize("method", ["zodi", "ddpm", "ddim"])
def test_invert_then_translate(cli, env, tmp_path, method):
    code, out, err = cli("invert", "--src", "toy:clear:val", "--method", method, "--prompt", "a street", *TINY,
                         "--steps", "6", "--strength", "0.5", "--guidance-scale", "1", "--out", tmp_path / "inv.h5", "--batch-size", "2")
    assert code == 0, err
    inv = Artifact(tmp_path / "inv.h5")
    assert inv.get("timesteps", 0).tolist() == [251, 84, 1][: len(inv.get("timesteps", 0))] or inv.get("timesteps", 0)[-1] == 1
    assert inv.get("z0", 0).shape == (4, 16, 32) and inv.get("labels", 0).shape == (32, 64)
    if method == "ddpm":
        assert inv.get("noise", 0).shape == (3, 4, 16, 32)
    code, out, err = cli("translate", "--src", f"h5:{tmp_path / 'inv.h5'}", "--prompt", "a street", *TINY,
                         "--guidance-scale", "1", "--out", tmp_path / "tr.h5", "--full-res")
    assert code == 0, err
    tr = Artifact(tmp_path / "tr.h5")
    assert tr.keys == inv.keys and tr.get("images", 0).shape == (128, 256, 3) and tr.get("labels", 0).shape == (128, 256)
    if method == "ddpm":      # same prompt and guidance: the regeneration reproduces the decoded z0
        from zodicli.diffusion.models import load_stack

        stack = load_stack(str(env / "tiny/sd"))
        import torch
        rec = stack.decode(torch.from_numpy(inv.get("z0", 0))[None])[0]
        code, _, _ = cli("translate", "--src", f"h5:{tmp_path / 'inv.h5'}", "--prompt", "a street", *TINY,
                         "--guidance-scale", "1", "--out", tmp_path / "same.h5")
        assert np.abs(Artifact(tmp_path / "same.h5").get("images", 0).astype(int) - rec.astype(int)).max() <= 1


def test_bad_translate_inputs(cli, env, tmp_path):
    for args, msg in (
        (["--src", "toy", *TINY, "--out", tmp_path / "x.h5"], "no prompt given"),
        (["--src", "toy", "--prompt", "x", *TINY, "--strength", "1.5", "--out", tmp_path / "x.h5"], "must be in (0, 1]"),
        (["--src", "toy", "--prompt", "x", "--model", "tiny", "--controlnet", "tiny-controlnet", "--size", "30x64",
          "--out", tmp_path / "x.h5"], "not a multiple of 4"),
        (["--src", "gta", "--prompt", "snowy street", "--out", tmp_path / "x.h5", "--data-root", tmp_path],
         "expected layout: gta5/images"),
        (["--src", "toy", "--prompt", "x", "--model", "sd15", "--out", tmp_path / "x.h5"], "preset 'sd15'"),
        (["--src", "toy", "--prompt", "x", *TINY, "--guidance", "sgg", "--out", tmp_path / "x.h5"], "needs --segmenter"),
    ):
        code, _, err = cli("translate", *args)
        assert code == 1 and len(err.strip().splitlines()) == 1 and msg in err, (args, err)


def test_sgg_translate_through_the_cli(cli, env, tmp_path):
    from zodicli.seg.train import TrainConfig, train

    train(TrainConfig(model="deeplabv3plus_r18", source="toy:clear:train", out=str(tmp_path / "seg"), iters=1,
                      batch_size=2, crop=(64, 96), resize=None, num_workers=0, ckpt_every=1))
    code, out, err = cli("translate", "--src", "toy:clear:val", "--domain", "fog", *TINY, "--steps", "4",
                         "--label-guidance", "sgg", "--segmenter", tmp_path / "seg/last.pt", "--sgg-scale", "5",
                         "--out", tmp_path / "sgg.h5", "--batch-size", "2")
    assert code == 0, err
    plain = tmp_path / "plain.h5"
    assert cli("translate", "--src", "toy:clear:val", "--domain", "fog", *TINY, "--steps", "4", "--out", plain)[0] == 0
    a, b = Artifact(tmp_path / "sgg.h5"), Artifact(plain)
    assert a.keys == b.keys and not np.array_equal(a.get("images", 0), b.get("images", 0))
    assert a.meta["inputs"]["segmenter"].startswith(f"{tmp_path / 'seg/last.pt'}@")
    assert "segmenter" not in b.meta["inputs"]


def test_domain_preset_values_are_recorded(cli, env, tmp_path):
    assert cli("translate", "--src", "toy:clear:val", "--domain", "night", *TINY, "--steps", "4", "--out", tmp_path / "n.h5")[0] == 0
    rec = Artifact(tmp_path / "n.h5").meta["settings"]
    assert (rec["prompt"], rec["strength"], rec["steps"], rec["domain"]) == ("driving at night", 0.9, 4, "night")



def test_control_scale_reaches_the_controlnet(cli, env, tmp_path):
    args = ["translate", "--src", "toy:clear:val", "--domain", "fog", *TINY, "--steps", "4"]
    for name, extra in (("off", ["--control-scale", "0"]), ("none", ["--controlnet", "none"]), ("on", [])):
        code, _, err = cli(*args, *extra, "--out", tmp_path / f"{name}.h5")
        assert code == 0, err
    assert same(tmp_path / "off.h5", tmp_path / "none.h5", fields=("images",))     # residuals × 0 = no ControlNet
    assert not same(tmp_path / "off.h5", tmp_path / "on.h5", fields=("images",))


@pytest.mark.parametrize("controlnet", ["tiny-controlnet", "none"])
def test_ddpm_edit_friendly_regeneration_is_the_same_image_at_every_skip(cli, env, tmp_path, controlnet):
    """Edit-friendly DDPM inversion (inbarhub/DDPM_inversion): with the inversion's own prompt and
    guidance, regenerating from the path latent x_{t_K} (the authors' wts[N-K]) with the noise maps
    z_K.. gives back the same image for every K. Starting from x_T instead (the old bug) does not."""
    common = ["--prompt", "a street", "--model", "tiny", "--controlnet", controlnet, "--short-side", "32",
              "--guidance-scale", "3"]
    assert cli("invert", "--src", "toy:clear:val", "--method", "ddpm", *common, "--steps", "6", "--strength", "1",
               "--out", tmp_path / "inv.h5")[0] == 0
    inv = Artifact(tmp_path / "inv.h5")
    assert inv.get("path", 0).shape == (6, 4, 16, 32) and np.array_equal(inv.get("path", 0)[0], inv.get("start", 0))
    images = {}
    for k in (0, 2, 5):
        code, _, err = cli("translate", "--src", f"h5:{tmp_path / 'inv.h5'}", *common, "--skip", k, "--out", tmp_path / f"s{k}.h5")
        assert code == 0, err
        a = Artifact(tmp_path / f"s{k}.h5")
        images[k] = np.stack([a.get("images", key).astype(int) for key in a.keys])
    assert np.abs(images[2] - images[0]).max() <= 1 and np.abs(images[5] - images[0]).max() <= 1
    if controlnet == "none":            # the old bug: x_T denoised as if it were at t_K is another image
        import torch

        from zodicli.diffusion.models import load_stack
        from zodicli.diffusion.zodi_transfer import sample

        stack = load_stack(str(env / "tiny/sd"))
        ts = [int(t) for t in inv.get("timesteps", 0)]
        wrong = sample(stack, torch.from_numpy(inv.get("start", 0))[None], ts[5:], stack.text(["a street, best quality"]),
                       stack.text([""]), 3.0, noises=torch.from_numpy(inv.get("noise", 0)[None, 5:]))
        assert np.abs(stack.decode(wrong)[0].astype(int) - images[0][0]).max() > 20


def test_ddpm_and_ddim_guide_against_the_empty_prompt_zodi_against_its_negative(cli, env, tmp_path):
    args = ["--src", "toy:clear:val", "--prompt", "a street", *TINY, "--steps", "4", "--strength", "0.5", "--guidance-scale", "3"]
    for method, expected in (("zodi", "lower quality, worst quality"), ("ddpm", ""), ("ddim", "")):
        assert cli("invert", *args, "--method", method, "--out", tmp_path / f"{method}.h5")[0] == 0
        assert Artifact(tmp_path / f"{method}.h5").meta["settings"]["negative_prompt"] == expected
    for neg in ("", "lower quality, worst quality"):
        assert cli("invert", *args, "--method", "ddpm", "--negative-prompt", neg, "--out", tmp_path / f"neg{len(neg)}.h5")[0] == 0
    default, empty, negative = (Artifact(tmp_path / f).get("noise", 0) for f in ("ddpm.h5", "neg0.h5", "neg28.h5"))
    assert np.array_equal(default, empty) and not np.allclose(default, negative)


def test_zodi_colours_every_label_id_as_gtfine_color_by_default(cli, env, tmp_path, monkeypatch, toy_root):
    """ZoDi's code feeds gtFine_color.png: parking (id 9), guard rail, ... keep their Cityscapes colours
    (cityscapesscripts' table), where the train-id palette paints them black."""
    import shutil

    from cityscapesscripts.helpers.labels import labels as cs_labels
    from PIL import Image

    from zodicli.diffusion import layout

    lut = layout.palette("cityscapes-full")
    for lab in cs_labels:
        if 0 <= lab.id < 34:
            assert tuple(lut[lab.id]) == lab.color, lab.name
    city = tmp_path / "city"
    shutil.copytree(toy_root, city)
    monkeypatch.setenv("ZODI_TOY_ROOT", str(city))
    first = sorted((city / "cityscapes/gtFine/val").rglob("*_labelIds.png"))[0]
    ids = np.array(Image.open(first))
    ids[:, :40] = 9                                                    # parking
    Image.fromarray(ids).save(first)
    seen = []
    real = layout.control_image
    monkeypatch.setattr(layout, "control_image", lambda maps, name: seen.append((maps[0], name)) or real(maps, name))
    args = ["translate", "--src", "toy:clear:val", "--prompt", "fog", *TINY, "--steps", "2", "--strength", "0.5"]
    assert cli(*args, "--out", tmp_path / "full.h5")[0] == 0
    maps, name = seen[0]
    assert name == "cityscapes-full" and (maps[:, :10] == 9).all()
    assert Artifact(tmp_path / "full.h5").meta["settings"]["palette"] == "cityscapes-full"
    assert tuple(real([maps], name)[0, :, 0, 0].mul(255).round().int().tolist()) == (250, 170, 160)
    seen.clear()
    assert cli(*args, "--palette", "cityscapes", "--out", tmp_path / "train.h5")[0] == 0
    maps, name = seen[0]
    assert name == "cityscapes" and (maps[:, :10] == 255).all()                    # ignore: black
    code, _, err = cli(*args, "--src", f"h5:{tmp_path / 'full.h5'}", "--palette", "cityscapes-full", "--out", tmp_path / "x.h5")
    assert code == 1 and "--palette cityscapes-full needs label ids" in err


def _hub_cache(root, repo, folder, commit):
    """A Hugging Face cache entry as `hf download` leaves it: refs/main -> commit -> snapshot files."""
    import shutil

    entry = root / f"models--{repo.replace('/', '--')}"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(commit)
    shutil.copytree(folder, entry / "snapshots" / commit)


def test_hub_ids_load_from_the_hugging_face_cache_offline(cli, env, tmp_path, monkeypatch):
    sd_commit, cn_commit = "1" * 40, "2" * 40
    cache = tmp_path / "hub"
    _hub_cache(cache, "zodi-test/tiny-sd", env / "tiny/sd", sd_commit)
    _hub_cache(cache, "zodi-test/tiny-cn", env / "tiny/controlnet", cn_commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["translate", "--src", "toy:clear:val", "--prompt", "fog", "--short-side", "32", "--steps", "2", "--strength", "0.5"]
    code, _, err = cli(*args, "--model", "zodi-test/tiny-sd", "--controlnet", "zodi-test/tiny-cn", "--out", tmp_path / "hub.h5")
    assert code == 0, err
    inputs = Artifact(tmp_path / "hub.h5").meta["inputs"]
    assert inputs["model_commit"] == sd_commit and inputs["controlnet_commit"] == cn_commit
    assert cli(*args, *TINY, "--out", tmp_path / "local.h5")[0] == 0       # the same weights from a local folder
    assert same(tmp_path / "hub.h5", tmp_path / "local.h5")
    code, _, err = cli(*args, "--model", "zodi-test/absent", "--controlnet", "none", "--out", tmp_path / "x.h5")
    assert code == 1 and "zodi-test/absent is not in the Hugging Face cache and downloads are off" in err
    assert "hf download zodi-test/absent" in err
    code, _, err = cli(*args, "--model", "zodi-test/tiny-sd", "--revision", "v9", "--controlnet", "none", "--out", tmp_path / "y.h5")
    assert code == 1 and "zodi-test/tiny-sd@v9 is not in the Hugging Face cache" in err


def test_a_preset_falls_back_to_its_hub_repository(cli, env, tmp_path, monkeypatch):
    presets = tmp_path / "presets.yaml"
    presets.write_text("mini:\n  repo: zodi-test/tiny-sd\n  path: not-here\n")
    monkeypatch.setenv("ZODI_PRESETS", str(presets))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    code, out, _ = cli("models", "list", "--json")
    assert code == 0 and json.loads(out)["diffusion"][0]["found"] is False
    code, _, err = cli("translate", "--src", "toy:clear:val", "--prompt", "fog", "--model", "mini", "--controlnet", "none",
                       "--out", tmp_path / "x.h5")
    assert code == 1 and "preset 'mini' is not at" in err and f"hf download zodi-test/tiny-sd --local-dir {env / 'not-here'}" in err
    _hub_cache(tmp_path / "hub", "zodi-test/tiny-sd", env / "tiny/sd", "3" * 40)
    code, out, _ = cli("models", "list", "--json")
    row = json.loads(out)["diffusion"][0]
    assert row["found"] is True and row["path"].endswith("3" * 40)


def test_guidance_interval_skips_the_unconditional_rows_outside_it(cli, env, tmp_path, monkeypatch):
    """Kynkäänniemi et al.: guidance only in an interval of timesteps; elsewhere one row per image.
    fog at strength 0.6: the encoding call (one row) and 12 steps (551 .. 1) of two rows each."""
    from zodicli.diffusion import models as M

    rows = []
    real = M.Stack.model_output
    monkeypatch.setattr(M.Stack, "model_output", lambda self, z, t, emb, control=None: rows.append((t, z.shape[0])) or
                        real(self, z, t, emb, control))
    args = ["translate", "--src", "toy:clear:val", "--domain", "fog", *TINY, "--batch-size", "4"]
    assert cli(*args, "--out", tmp_path / "full.h5")[0] == 0
    full = sum(n for _, n in rows)
    rows.clear()
    assert cli(*args, "--guidance-interval", "200,500", "--out", tmp_path / "mid.h5")[0] == 0
    guided = {t for t, n in rows if n == 2}
    assert guided == {201, 251, 301, 351, 401, 451} and sum(n for _, n in rows) == full - 4 * 6   # 6 steps lost a row each
    rows.clear()
    assert cli(*args, "--guidance-interval", "0,999", "--out", tmp_path / "all.h5")[0] == 0
    assert same(tmp_path / "full.h5", tmp_path / "all.h5")                      # an interval holding every step: no change
    assert not same(tmp_path / "full.h5", tmp_path / "mid.h5")
    code, _, err = cli(*args, "--guidance-interval", "9,1", "--out", tmp_path / "x.h5")
    assert code == 2 and "need 0 <= LO <= HI" in err
