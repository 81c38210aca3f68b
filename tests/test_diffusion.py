"""Diffusion algorithms on a tiny random SD + ControlNet stack (built from configs, offline)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zodicli.errors import InputError


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    from zodicli.diffusion.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def stack(tiny):
    from zodicli.diffusion.models import load_stack

    return load_stack(tiny["model"], tiny["controlnet"])


def _batch(stack, n=2, hw=(32, 64), seed=0):
    from zodicli.pipeline.diffuse import generators

    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for _ in range(n)]
    labels = [rng.integers(0, 19, hw).astype(np.uint8) for _ in range(n)]
    gens = generators(seed, [f"k{i}" for i in range(n)])
    z0 = stack.encode(images, gens)
    emb = stack.text(["driving in fog, best quality"] * n)
    neg = stack.text(["lower quality, worst quality"] * n)
    from zodicli.diffusion.layout import control_image

    return z0, emb, neg, control_image(labels, "cityscapes"), gens


@pytest.mark.parametrize("use_control,guidance", [(False, 1.0), (True, 1.0), (False, 7.5), (True, 7.5)])
@torch.no_grad()
def test_ddpm_inversion_regenerates_z0(stack, use_control, guidance):
    from zodicli.diffusion.ddpm_inversion import ddpm_invert, ddpm_regenerate
    from zodicli.diffusion.schedule import ddim_timesteps

    z0, emb, neg, control, gens = _batch(stack)
    control = control if use_control else None
    ts = ddim_timesteps(10)
    path, zs = ddpm_invert(stack, z0, ts, emb, neg, guidance, control, 1.0, gens)
    assert zs.shape == path.shape == (2, 10, 4, 16, 32) and torch.isfinite(zs).all() and zs.abs().max() < 100
    for skip in (0, 4, 9):          # from any path latent x_{t_K}, the same x0 (to float rounding of the retrace)
        rec = ddpm_regenerate(stack, path, zs, ts, emb, neg, guidance, control, skip=skip)
        assert (rec - z0).abs().max().item() <= (1e-5 if skip == 0 else 1e-4)


@torch.no_grad()
def test_zodi_encoding_equals_its_closed_form(stack):
    from zodicli.diffusion.zodi_transfer import item_noise, zodi_encode
    from zodicli.pipeline.diffuse import generators

    z0, emb, _, control, _ = _batch(stack)
    z_enc = zodi_encode(stack, z0, 600, emb, control, generators(5, ["a", "b"]))
    a = stack.alpha(600)
    n = item_noise(z0, generators(5, ["a", "b"]))
    eps = stack.eps(math.sqrt(a) * z0 + math.sqrt(1 - a) * n, 600, emb, control=control)   # conditional, no CFG
    assert torch.equal(z_enc, math.sqrt(a) * z0 + math.sqrt(1 - a) * eps)
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2      # SD's scaled-linear schedule
    assert a == pytest.approx(np.cumprod(1 - betas)[600], rel=1e-6)


def _record_timesteps(stack, monkeypatch):
    calls = []
    real = stack.model_output

    def spy(z, t, emb, control=None):
        calls.append(t)
        return real(z, t, emb, control)

    monkeypatch.setattr(stack, "model_output", spy)
    return calls


@pytest.mark.parametrize("domain,exact,encode_t,steps", [("fog", False, 600, 12), ("night", False, 900, 18), ("fog", True, 551, 12),
                                                         ("full", False, 999, 20)])
@torch.no_grad()
def test_presets_run_the_published_timesteps(stack, monkeypatch, domain, exact, encode_t, steps):
    from zodicli.diffusion.zodi_transfer import transfer
    from zodicli.pipeline.diffuse import domain_presets

    p = domain_presets()[domain] if domain != "full" else {"strength": 1.0, "steps": 20}   # γ = 1: t* stays in range
    z0, emb, neg, control, gens = _batch(stack, n=1)
    calls = _record_timesteps(stack, monkeypatch)
    rng = np.random.default_rng(0)
    transfer(stack, [rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)], control, emb, neg, gens,
             p["strength"], p["steps"], 9.0, 1.0, exact)
    first = 1 + 50 * (steps - 1)
    assert calls == [encode_t] + list(range(first, 0, -50))
    assert len(calls) - 1 == steps and calls[-1] == 1


@torch.no_grad()
def test_ddim_inversion_is_exact_with_a_zero_noise_predictor(stack, monkeypatch):
    from zodicli.diffusion.ddim_inversion import ddim_invert
    from zodicli.diffusion.schedule import ddim_timesteps
    from zodicli.diffusion.zodi_transfer import sample

    monkeypatch.setattr(stack, "model_output", lambda z, t, emb, control=None: torch.zeros_like(z))
    z0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ts = ddim_timesteps(25)
    x_t = ddim_invert(stack, z0, ts, None)
    assert (x_t - z0).abs().max() > 1          # it moved: x_T = √(ᾱ_T/ᾱ_final)·z0
    back = sample(stack, x_t, ts, None, eta=0.0)
    assert (back - z0).abs().max().item() < 1e-5


def test_v_prediction_output_is_converted_to_epsilon(stack, monkeypatch):
    monkeypatch.setattr(stack, "prediction_type", "v_prediction")
    z, v = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    a = stack.alpha(300)
    assert torch.allclose(stack.to_eps(v, z, 300), math.sqrt(a) * v + math.sqrt(1 - a) * z)
    # consistency: x0 from ε equals x0 from v (x0 = √ᾱ·z − √(1−ᾱ)·v)
    eps = stack.to_eps(v, z, 300)
    assert torch.allclose((z - math.sqrt(1 - a) * eps) / math.sqrt(a), math.sqrt(a) * z - math.sqrt(1 - a) * v, atol=1e-6)


def test_label_guidance_alternates_and_descends(stack, tmp_path):
    from zodicli.diffusion.schedule import step_mean
    from zodicli.diffusion.sgg import LabelGuidance
    from zodicli.seg.models import build_model

    torch.manual_seed(0)
    seg = build_model("deeplabv3plus_r18").eval()
    z0, emb, neg, control, gens = _batch(stack, n=1)
    labels = [np.where(np.arange(64)[None, :] < 32, 0, 10).repeat(32, 0).astype(np.uint8)]
    g = LabelGuidance(stack, seg, labels, scale=50.0)
    t, prev = 501, 451
    with torch.no_grad():
        eps = stack.eps(z0, t, emb)
        mean, sigma, x0 = step_mean(stack, z0, t, prev, eps, 1.0)
    local = g(0, t, z0, mean, sigma, x0, eps)
    glob = g(1, t, z0, mean, sigma, x0, eps)
    assert g.modes == ["local", "global"]
    assert not torch.equal(local, mean) and not torch.equal(glob, mean)
    # A small step along −∇L lowers L (first order): measure L at the mean's implied x̂0.
    y = g.y
    grad = g.grad(z0, eps, stack.alpha(t), y)
    small = z0 - 1e-2 * grad / grad.norm()

    def ce(z):
        import torch.nn.functional as F
        from zodicli.seg.augment import normalize
        x0_ = (z - math.sqrt(1 - stack.alpha(t)) * eps) / math.sqrt(stack.alpha(t))
        img = (stack.vae.decode(x0_ / stack.vae_scale).sample.clamp(-1, 1) + 1) / 2
        logits = F.interpolate(seg(normalize(img))["logits"], size=y.shape[-2:], mode="bilinear", align_corners=False)
        return F.cross_entropy(logits, y).item()
    with torch.no_grad():
        assert ce(small) < ce(z0)


def test_input_checks(stack, tiny, tmp_path, monkeypatch):
    from zodicli.diffusion.layout import check_size
    from zodicli.diffusion.models import load_stack
    from zodicli.diffusion.schedule import kept_timesteps
    from zodicli.pipeline.diffuse import DiffusionSettings

    with pytest.raises(InputError, match=r"not a multiple of 4"):
        check_size((30, 64), stack.size_multiple)
    with pytest.raises(InputError, match=r"must be in \(0, 1\]"):
        kept_timesteps(20, 1.5)
    with pytest.raises(InputError, match="no prompt given"):
        DiffusionSettings(src="toy", out="x").resolve()
    monkeypatch.setenv("ZODI_MODELS", str(tmp_path))
    with pytest.raises(InputError, match=r"preset 'sd15' is not at .*stable-diffusion-v1-5 .*hf download "
                                         r"stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir .*stable-diffusion-v1-5'"):
        load_stack("sd15")
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(InputError, match="needs a local config folder"):
        load_stack(str(tmp_path / "model.safetensors"))
    with pytest.raises(InputError, match="ControlNet not found"):
        load_stack(tiny["model"], str(tmp_path / "nocn"))


def test_gpu_defaults_resolve_by_device(monkeypatch):
    """auto precision: fp16 weights and bf16 autocast on CUDA (fp16 where bf16 is missing), fp32 and no
    autocast on the CPU; the CUDA side is checked with the device mocked."""
    from zodicli.runtime import resolve_amp, resolve_dtype

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert resolve_dtype("auto", cuda) == "fp16" and resolve_dtype("auto", cpu) == "fp32" and resolve_dtype("bf16", cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_amp("auto", cuda) == "bf16" and resolve_amp("auto", cpu) == "none" and resolve_amp("fp16", cpu) == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_amp("auto", cuda) == "fp16"


def test_models_load_in_their_precision_with_sdpa_attention(tiny, tmp_path, monkeypatch):
    """Weights are loaded straight into the run's dtype (no fp32 copy first), from fp16 files where a
    repository has them, and attention runs through torch's scaled_dot_product_attention."""
    import shutil
    from pathlib import Path

    from diffusers.models.attention_processor import AttnProcessor2_0

    from zodicli.diffusion import models as M

    seen = []
    real = M._load_part
    monkeypatch.setattr(M, "_load_part", lambda loader, path, sub=None, **kw: seen.append((sub, kw)) or real(loader, path, sub, **kw))
    stack = M.load_stack(tiny["model"], tiny["controlnet"], dtype=torch.bfloat16)
    assert {sub: kw.get("torch_dtype") for sub, kw in seen} == {"unet": torch.bfloat16, "vae": torch.bfloat16,
                                                                "text_encoder": torch.bfloat16, "tokenizer": None, None: torch.bfloat16}
    assert stack.unet.dtype == torch.bfloat16
    assert all(isinstance(p, AttnProcessor2_0) for p in stack.unet.attn_processors.values())
    unet = shutil.copytree(Path(tiny["model"]) / "unet", tmp_path / "unet")
    assert M._precision(unet, torch.float16) == {"torch_dtype": torch.float16}
    shutil.copy(unet / "diffusion_pytorch_model.safetensors", unet / "diffusion_pytorch_model.fp16.safetensors")
    assert M._precision(unet, torch.float16) == {"torch_dtype": torch.float16, "variant": "fp16"}
    assert M._precision(unet, torch.bfloat16) == {"torch_dtype": torch.bfloat16}


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_the_ddim_step_equals_diffusers_ddim_scheduler(stack, eta):
    """zodi's hand-written step (schedule.step_mean) against diffusers' DDIMScheduler.step on SD 1.5's
    schedule, every step of a 20-step run, the same ε and the same noise."""
    from diffusers import DDIMScheduler

    from zodicli.diffusion.schedule import ddim_timesteps, step_mean
    from zodicli.diffusion.tiny import SD15_SCHEDULER

    sched = DDIMScheduler(**SD15_SCHEDULER)
    sched.set_timesteps(20)
    ts = ddim_timesteps(20)
    assert ts == sched.timesteps.tolist()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 16, generator=g, dtype=torch.float64)
    for i, t in enumerate(ts):
        eps, noise = torch.randn(x.shape, generator=g, dtype=torch.float64), torch.randn(x.shape, generator=g, dtype=torch.float64)
        mean, sigma, _ = step_mean(stack, x, t, ts[i + 1] if i + 1 < len(ts) else -1, eps, eta)
        ours = mean + sigma * noise
        ref = sched.step(eps.float(), t, x.float(), eta=eta, variance_noise=noise.float()).prev_sample
        assert (ours.float() - ref).abs().max().item() <= 1e-5, (t, eta)
        x = ours
