"""zodi finetune (a LoRA adapter of the UNet) and translate --lora, on the tiny stack and the toy city."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from zodicli.store import Artifact

FT = ["--target", "toy:fog:train", "--prompt", "driving in sks style", "--model", "tiny", "--num-images", "3",
      "--steps", "4", "--batch-size", "2", "--size", "32x64", "--ckpt-every", "2"]
TR = ["--src", "toy:clear:val", "--prompt", "driving in sks style", "--model", "tiny", "--controlnet", "tiny-controlnet",
      "--size", "32x64", "--steps", "4"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from zodicli.diffusion.tiny import make_tiny

    root = tmp_path_factory.mktemp("ftmodels")
    make_tiny(root / "tiny")
    make_tiny(root / "other", seed=1)
    return root


@pytest.fixture
def env(models, toy_env, monkeypatch):
    monkeypatch.setenv("ZODI_MODELS", str(models))
    return models


def weights(folder):
    return load_file(str(folder / "pytorch_lora_weights.safetensors"))


def test_finetune_is_deterministic_resumes_exactly_and_records_its_inputs(cli, env, tmp_path, monkeypatch):
    code, out, err = cli("finetune", *FT, "--out", tmp_path / "a", "--json")
    assert code == 0, err
    assert json.loads(out)["steps"] == 4 and json.loads(out)["images"] == 3
    a = weights(tmp_path / "a")
    assert len(a) == 64 and all(k.startswith("unet.") and ".lora." in k for k in a)
    assert any(v.abs().sum() > 0 for k, v in a.items() if ".up." in k)          # B left zero: nothing learnt
    card = json.loads((tmp_path / "a/zodi_finetune.json").read_text())
    from zodicli.data.registry import open_dataset

    assert card["inputs"]["target_keys"] == open_dataset("toy:fog:train").keys()[:3]
    assert card["inputs"]["model"].startswith("tiny@") and card["settings"]["rank"] == 4 and card["steps_done"] == 4
    assert cli("finetune", *FT, "--out", tmp_path / "b")[0] == 0                    # again, elsewhere: the same adapter
    b = weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)

    from zodicli.pipeline import finetune as F

    real = F._loss

    def stopped_at_step_3(stack, latents, emb, cfg, step, part):
        if step == 3:
            raise KeyboardInterrupt
        return real(stack, latents, emb, cfg, step, part)

    monkeypatch.setattr(F, "_loss", stopped_at_step_3)
    code, _, err = cli("finetune", *FT, "--out", tmp_path / "c")
    assert code == 130 and "stopped at step 3" in err
    monkeypatch.setattr(F, "_loss", real)
    code, _, err = cli("finetune", *FT, "--out", tmp_path / "c")
    assert code == 0 and "resuming" in err and "at step 3/4" in err
    c = weights(tmp_path / "c")
    assert all(torch.equal(a[k], c[k]) for k in a)                                # stopped and resumed: identical

    code, _, err = cli("finetune", *FT, "--lr", "1e-3", "--out", tmp_path / "c")
    assert code == 1 and "other settings or data" in err and "lr: 0.0001 -> 0.001" in err and "--overwrite" in err


def test_translate_with_lora_scale_0_is_the_base_model_and_records_the_adapter(cli, env, tmp_path):
    assert cli("finetune", *FT, "--out", tmp_path / "ad")[0] == 0
    assert cli("translate", *TR, "--out", tmp_path / "base.h5")[0] == 0
    code, _, err = cli("translate", *TR, "--lora", tmp_path / "ad", "--lora-scale", "0", "--out", tmp_path / "zero.h5")
    assert code == 0, err
    code, _, err = cli("translate", *TR, "--lora", tmp_path / "ad", "--out", tmp_path / "lora.h5")
    assert code == 0, err
    base, zero, lora = (Artifact(tmp_path / f"{n}.h5") for n in ("base", "zero", "lora"))
    k = base.keys[0]
    assert np.array_equal(base.get("images", k), zero.get("images", k))       # s = 0: the base UNet exactly
    assert not np.array_equal(base.get("images", k), lora.get("images", k))
    assert lora.meta["inputs"]["lora"].startswith(f"{tmp_path / 'ad'}@") and lora.meta["settings"]["lora_scale"] == 1.0

    other = env / "other/sd"
    code, _, err = cli("translate", *TR, "--model", other, "--lora", tmp_path / "ad", "--out", tmp_path / "x.h5")
    assert code == 1 and "was trained on tiny@" in err and f"not on {other}@" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "half").mkdir()
    code, _, err = cli("translate", *TR, "--lora", tmp_path / "half", "--out", tmp_path / "y.h5")
    assert code == 1 and "is not a finished zodi adapter" in err


def test_an_adapter_of_attention_and_convolutions_round_trips_through_its_file(models):
    """--targets attention+conv adds LoRA to the ResNet convolutions too; saving and loading keeps every
    one of its weights (the UNet's output with the loaded adapter equals the trained one's)."""
    from zodicli.diffusion.lora import add_lora, lora_state, set_lora_state
    from zodicli.diffusion.models import load_stack

    torch.manual_seed(0)
    trained, loaded = (load_stack(str(models / "tiny/sd")) for _ in range(2))
    params = add_lora(trained.unet, 4, None, "attention+conv")
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn_like(p))
    state = lora_state(trained.unet)
    assert any(".conv1." in k for k in state) and len(state) > 64
    add_lora(loaded.unet, 4, None, "attention+conv")
    set_lora_state(loaded.unet, state)
    x, emb = torch.randn(1, 4, 8, 16), trained.text(["a street"])
    with torch.no_grad():
        assert torch.equal(loaded.unet(x, 10, encoder_hidden_states=emb).sample, trained.unet(x, 10, encoder_hidden_states=emb).sample)


def test_prior_preservation_adds_the_source_images_loss_and_is_recorded(cli, env, tmp_path):
    """--prior: DreamBooth's prior-preservation term on source images with their own prompt; the
    adapter differs from one trained without it, and the source is one of the recorded inputs."""
    assert cli("finetune", *FT, "--steps", "2", "--out", tmp_path / "plain")[0] == 0
    code, _, err = cli("finetune", *FT, "--steps", "2", "--prior", "toy:clear:train", "--prior-prompt", "driving on a clear day",
                       "--num-prior", "3", "--out", tmp_path / "prior")
    assert code == 0, err
    plain, prior = weights(tmp_path / "plain"), weights(tmp_path / "prior")
    assert plain.keys() == prior.keys() and not all(torch.equal(plain[k], prior[k]) for k in plain)
    card = json.loads((tmp_path / "prior/zodi_finetune.json").read_text())
    assert card["settings"]["prior"] == "toy:clear:train" and len(card["inputs"]["prior"]) == 16
