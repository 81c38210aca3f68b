"""extract-features (DIFF) and pseudolabel on the toy city with tiny models."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from zodicli.errors import InputError
from zodicli.store import Artifact, ArtifactWriter


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from zodicli.diffusion.tiny import make_tiny

    root = tmp_path_factory.mktemp("fmodels")
    make_tiny(root / "tiny")
    make_tiny(root / "tiny-v", prediction_type="v_prediction")
    return root


@pytest.fixture
def env(models, toy_env, monkeypatch):
    monkeypatch.setenv("ZODI_MODELS", str(models))
    return models


def test_features_layout_strides_and_determinism(cli, env, tmp_path):
    args = ["extract-features", "--src", "toy:clear:val", "--model", str(env / "tiny/sd"), "--short-side", "32"]
    code, out, err = cli(*args, "--out", tmp_path / "f1.h5", "--batch-size", "1", "--json")
    assert code == 0, err
    a = Artifact(tmp_path / "f1.h5")
    assert a.fields == ["features/s2", "features/s4", "labels"]
    s2, s4 = a.file["features/s2"], a.file["features/s4"]
    # tiny UNet (32, 64): up0 = 2 resnets of 64 ch at stride 4; up1 = 2 resnets + 2 transformers of 32 ch at stride 2
    assert s4.shape == (4, 2 * 64 * 9, 8, 16) and s2.shape == (4, 4 * 32 * 9, 16, 32)
    assert s2.dtype == np.float16 and s2.attrs["stride"] == 2 and s2.attrs["channels"] == 1152
    assert list(s2.attrs["timesteps"]) == [91, 52, 30, 22, 18, 14, 11, 7, 3]
    assert s2.attrs["modules"] == "up1.res0,up1.res1,up1.attn0,up1.attn1"
    assert np.isfinite(a.get("features/s2", 0).astype(np.float32)).all()
    code, out, err = cli("info", tmp_path / "f1.h5")
    assert "stride=4" in out and "channels=1152" in out
    assert cli(*args, "--out", tmp_path / "f3.h5", "--batch-size", "3")[0] == 0
    b = Artifact(tmp_path / "f3.h5")
    assert all(np.array_equal(a.get(f, k), b.get(f, k)) for f in a.fields for k in a.keys)
    code, out, err = cli(*args, "--blocks", "madm", "--timesteps", "52,3", "--out", tmp_path / "m.h5")
    assert code == 0, err
    assert Artifact(tmp_path / "m.h5").file["features/s2"].shape == (4, 32 * 2, 16, 32)


def test_v_prediction_checkpoints_use_v_formulas(env, tmp_path):
    from zodicli.diffusion.features import extract, select_blocks
    from zodicli.diffusion.models import load_stack
    from zodicli.pipeline.diffuse import generators

    outs = {}
    for name in ("tiny", "tiny-v"):              # same weights, different prediction_type
        stack = load_stack(str(env / name / "sd"))
        z0 = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(0))
        cond = stack.text([""])
        calls = []
        real = stack.to_eps
        stack.to_eps = lambda out, z, t, _r=real: calls.append(stack.prediction_type) or _r(out, z, t)
        outs[name] = extract(stack, z0, cond, select_blocks(stack.unet, "madm"), eta=0.0, generators=generators(0, ["k"]))
        assert set(calls) == {"epsilon" if name == "tiny" else "v_prediction"}
    # same weights and input at the first feature step, but the inversion path differs with the formula
    assert not torch.equal(outs["tiny"][2], outs["tiny-v"][2])


def test_diff_inversion_is_the_authors_loop(env):
    """DIFF's generalized_steps (run_inversion): ε(x_t, t) at the current t from t = 0, noise only
    where 10 < t < 250, c1 = η·√((1−ᾱ_n/ᾱ_t)(1−ᾱ_n)/(1−ᾱ_t)), c2 = √max(1−ᾱ_n−c1², 1e-10); written
    out here with the UNet called directly and the same noise draws."""
    from zodicli.diffusion.features import INVERSION_TIMESTEPS, diff_invert
    from zodicli.diffusion.models import load_stack
    from zodicli.pipeline.diffuse import generators

    assert INVERSION_TIMESTEPS == tuple(sorted([160, 139, 121, 105, 91, 80, 69, 60, 52, 45, 40, 34, 30, 26, 23, 22, 21, 20, 19,
                                                18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1]))
    stack = load_stack(str(env / "tiny/sd"))
    z0 = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(0))
    cond = stack.text([""])
    ours = diff_invert(stack, z0, cond, eta=1.0, generators=generators(0, ["k"]))
    ab = stack.alphas_cumprod.double()
    seq = list(INVERSION_TIMESTEPS)
    gen = generators(0, ["k"])[0]
    x = z0.double()
    with torch.no_grad():
        for t, n in zip([0] + seq[:-1], seq):
            et = stack.unet(x.float(), torch.tensor([t]), encoder_hidden_states=cond).sample.double()
            at, an = ab[t], ab[n]
            x0 = (x - et * (1 - at).sqrt()) / at.sqrt()
            c1 = (1.0 if 10 < t < 250 else 0.0) * ((1 - an / at) * (1 - an) / (1 - at)).sqrt()
            c2 = torch.clamp((1 - an) - c1 ** 2, min=1e-10).sqrt()
            x = an.sqrt() * x0 + c2 * et + (c1 * torch.randn(z0.shape[1:], generator=gen).double() if c1 > 0 else 0)
    assert torch.allclose(ours.double(), x, atol=1e-4), (ours.double() - x).abs().max()


def test_diff_hook_points_are_the_residual_branch_and_the_first_transformer_block(env):
    """DIFF's hooks: a ResNet's hidden_states after conv2 (before the skip connection and output scale),
    and transformer_blocks[0]'s output tokens summed over two identical guidance halves (x 2)."""
    from zodicli.diffusion.features import FeatureRecorder, up_modules
    from zodicli.diffusion.models import load_stack

    stack = load_stack(str(env / "tiny/sd"))
    mods = up_modules(stack.unet)
    res, attn = mods["up1.res0"], mods["up1.attn0"]
    seen = {}
    res.register_forward_pre_hook(lambda m, args: seen.update(res=args))
    attn.transformer_blocks[0].register_forward_pre_hook(lambda m, args, kw: seen.update(tok=(args, kw)), with_kwargs=True)
    rec = FeatureRecorder(stack.unet, ["up1.res0", "up1.attn0"], attn_scale=2.0)
    rec.active = True
    z = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        stack.unet(z, torch.tensor([30]), encoder_hidden_states=stack.text([""]))
        x, temb = seen["res"]
        act = torch.nn.functional.silu
        h = res.conv1(act(res.norm1(x))) + res.time_emb_proj(act(temb))[:, :, None, None]
        branch = res.conv2(act(res.norm2(h)))
        assert torch.allclose(rec.store["up1.res0"][0], branch, atol=1e-6)
        assert not torch.allclose(rec.store["up1.res0"][0], res(x, temb), atol=1e-3)     # not the whole block output
        args, kw = seen["tok"]
        tokens = attn.transformer_blocks[0](*args, **kw)
        hh, ww = rec.store["up1.attn0"][0].shape[-2:]
        expected = 2 * tokens.reshape(1, hh, ww, -1).permute(0, 3, 1, 2)
        assert torch.allclose(rec.store["up1.attn0"][0], expected, atol=1e-6)
    rec.close()


def test_feature_input_checks(env):
    from zodicli.diffusion.features import check_timesteps, select_blocks
    from zodicli.diffusion.models import load_stack

    with pytest.raises(InputError, match="exceeds 160"):
        check_timesteps([1, 3, 200], [3])
    with pytest.raises(InputError, match=r"feature timesteps \[5\] are not evaluated by the inversion"):
        check_timesteps([1, 3, 5], [3, 5])          # evaluated: 0, 1, 3 (each step at its starting timestep)
    with pytest.raises(InputError, match="matches no UNet module"):
        select_blocks(load_stack(str(env / "tiny/sd")).unet, "down9")


def test_class_thresholds_by_hand(tmp_path):
    from zodicli.pipeline.pseudolabel import class_thresholds

    preds = np.zeros((1, 10), np.uint8)
    conf = (np.arange(1, 11, dtype=np.float32) / 10).reshape(1, 10).astype(np.float16)   # 0.1 .. 1.0, all class 0
    preds[0, :2] = 13                                                                        # two "car" pixels: 0.1, 0.2
    with ArtifactWriter(tmp_path / "raw.h5", "pseudolabel-raw", {}, {}, ["a"]) as w:
        w.write(["a"], {"preds": [preds], "confidence": [conf]})
    t = class_thresholds(Artifact(tmp_path / "raw.h5"), 0.5)
    kept0 = conf[preds == 0].astype(np.float32) >= t[0]
    assert kept0.sum() == 4 and conf[preds == 0][kept0].min() == np.float16(0.7)    # top half of 8 pixels: 0.7..1.0
    kept13 = conf[preds == 13].astype(np.float32) >= t[13]
    assert kept13.sum() == 1                                                         # top half of 2 pixels
    assert t[5] == 1.0                                                               # never predicted: keep nothing


def test_pseudolabel_end_to_end_into_train_seg(cli, tmp_path, toy_env):
    from zodicli.seg.train import TrainConfig, train

    train(TrainConfig(model="deeplabv3plus_r18", source="toy:clear:train", out=str(tmp_path / "seg"), iters=2,
                      batch_size=2, crop=(64, 96), resize=None, num_workers=0, ckpt_every=2))
    code, out, err = cli("pseudolabel", "--checkpoint", tmp_path / "seg/last.pt", "--src", "toy:fog:train",
                         "--out", tmp_path / "pl.h5", "--class-top-p", "0.5", "--flip", "--scales", "0.75,1", "--save-probs", "--json")
    assert code == 0, err
    res = json.loads(out)
    pl, raw = Artifact(tmp_path / "pl.h5"), Artifact(tmp_path / "pl.raw.h5")
    assert pl.complete and raw.get("probs", 0).shape == (19, 128, 256)
    k = pl.keys[0]
    p, c = raw.get("preds", k), raw.get("confidence", k).astype(np.float32)
    assert np.allclose(raw.get("probs", k).astype(np.float32).max(0), c, atol=2e-3)
    thr = np.array(res["class_thresholds"] + [2.0] * 237, np.float32)
    assert np.array_equal(pl.get("preds", k), np.where(c >= thr[p], p, 255))
    assert pl.get("weight", k) == pytest.approx((c >= 0.968).mean())
    assert pl.meta["settings"]["class_thresholds"] == [round(t, 6) for t in res["class_thresholds"]]
    # plugs into train-seg: target images come from the artifact's recorded src
    train(TrainConfig(model="deeplabv3plus_r18", source="toy:clear:train", out=str(tmp_path / "st"), iters=1,
                      batch_size=2, crop=(64, 96), resize=None, num_workers=0, target_pl=str(tmp_path / "pl.h5")))
    rec = json.loads((tmp_path / "st/metrics.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(rec["ce_pl"])


def test_diff_fusion_shapes_for_sd_strides():
    from zodicli.seg.models import build_model

    m = build_model("diff_fusion", in_channels={"s64": 96, "s32": 64, "s16": 48, "s8": 32}, widths=(64, 32, 16))
    out = m({"s64": torch.randn(2, 96, 4, 8), "s32": torch.randn(2, 64, 8, 16), "s16": torch.randn(2, 48, 16, 32),
             "s8": torch.randn(2, 32, 32, 64)})
    assert out["logits"].shape == (2, 19, 64, 128)          # stride 4: one 2x step below the finest cache
    with pytest.raises(InputError, match="needs cached features"):
        build_model("diff_fusion")


def test_train_and_evaluate_on_cached_features(cli, env, tmp_path):
    feats = {}
    for split in ("train", "val"):
        feats[split] = tmp_path / f"f-{split}.h5"
        code, _, err = cli("extract-features", "--src", f"toy:clear:{split}", "--model", str(env / "tiny/sd"), "--short-side", "32",
                           "--blocks", "madm", "--timesteps", "52,3", "--out", feats[split])
        assert code == 0, err
    common = ["--source", "toy:clear:train", "--batch-size", "2", "--fusion-widths", "64,32", "--num-workers", "0"]
    code, out, err = cli("train-seg", "--backbone", f"features:h5:{feats['train']}", *common, "--val", "toy:clear:val",
                         "--val-features", feats["val"], "--out", tmp_path / "run", "--iters", "4", "--json")
    assert code == 0, err
    best = json.loads(out)["best"]["score"]
    code, out, err = cli("evaluate", "--checkpoint", tmp_path / "run/last.pt", "--dataset", "toy:clear:val",
                         "--features", f"h5:{feats['val']}", "--json")
    assert code == 0, err
    assert json.loads(out)["miou"] == pytest.approx(best)      # the same numbers as training's own evaluation
    # errors: features that miss source keys, --val without features, a feature checkpoint without --features
    code, _, err = cli("train-seg", "--backbone", f"features:h5:{feats['val']}", *common, "--out", tmp_path / "bad", "--iters", "1")
    assert code == 1 and "source images have no cached features" in err
    code, _, err = cli("train-seg", "--backbone", f"features:h5:{feats['train']}", *common, "--val", "toy:clear:val",
                       "--out", tmp_path / "bad2", "--iters", "1")
    assert code == 1 and "--val with a feature backbone needs --val-features" in err
    code, _, err = cli("evaluate", "--checkpoint", tmp_path / "run/last.pt", "--dataset", "toy:clear:val", "--out", tmp_path / "p.h5")
    assert code == 1 and "pass --features" in err


def test_diff_online_trains_the_head_with_the_frozen_unet_in_the_loop(cli, env, tmp_path):
    """DIFF's own training path: features re-extracted every step (fresh noise in training, noise seeded
    by each image's latent in eval, so a prediction does not depend on its batch); only the head is
    trained and saved."""
    from zodicli.seg.models import build_model

    torch.manual_seed(0)
    m = build_model("diff_online", sd_model=str(env / "tiny/sd"), widths=(64, 32)).eval()
    x = torch.randn(3, 3, 32, 64)
    with torch.no_grad():
        together = m(x)["logits"]
        alone = torch.cat([m(x[i:i + 1])["logits"] for i in range(3)])
        assert torch.allclose(together, alone, atol=1e-5)
        m.train()
        a, b = m.features(x[:1]), m.features(x[:1])
        assert not torch.equal(a["s2"], b["s2"])                           # fresh noise every training step
    assert all(k.startswith("head.") for k in m.state_dict())             # the diffusion model is not saved
    common = ["--source", "toy:clear:train", "--batch-size", "2", "--resize", "32x64", "--crop", "none", "--num-workers", "0",
              "--fusion-widths", "64,32", "--optimizer", "adamw", "--lr", "1e-3"]
    code, out, err = cli("train-seg", "--backbone", "diff-online", "--sd-model", env / "tiny/sd", *common, "--iters", "2",
                         "--val", "toy:clear:val", "--out", tmp_path / "run", "--json")
    assert code == 0, err
    best = json.loads(out)["best"]["score"]
    state = torch.load(tmp_path / "run/last.pt", weights_only=True)
    assert state["model_config"]["name"] == "diff_online" and not any("unet" in k for k in state["model"])
    code, out, err = cli("evaluate", "--checkpoint", tmp_path / "run/last.pt", "--dataset", "toy:clear:val", "--size", "32x64",
                         "--json")
    assert code == 0 and json.loads(out)["miou"] == pytest.approx(best), err
    code, _, err = cli("train-seg", "--backbone", "diff-online", *common, "--iters", "1", "--out", tmp_path / "bad")
    assert code == 1 and "--backbone diff-online needs --sd-model" in err


def test_sd_unet_backbone_lplr_and_gradients(env):
    from zodicli.seg.models import build_model

    torch.manual_seed(0)
    m = build_model("sd_unet", sd_model=str(env / "tiny/sd")).train()
    x = torch.randn(2, 3, 32, 64)
    out = m(x)
    assert out["logits"].shape == (2, 19, 8, 16) and out["palette_latent"].shape == (2, 4, 16, 32)
    labels = torch.randint(0, 19, (2, 32, 64))
    F_ = torch.nn.functional
    F_.cross_entropy(F_.interpolate(out["logits"], size=(32, 64), mode="bilinear"), labels).backward()
    assert m.unet.up_blocks[1].resnets[0].conv1.weight.grad.abs().sum() > 0      # CE reaches the UNet through the hooks
    assert all(p.grad is None for p in m.vae.parameters())                        # the VAE stays frozen
    # ... but not through the decoded palette image (MADM decodes it under no_grad): conv_out, which only
    # makes the palette latent, gets no gradient from CE, and gets one from LPLR
    assert m.unet.conv_out.weight.grad is None or not m.unet.conv_out.weight.grad.any()
    m.zero_grad()
    m.lplr_loss(m(x)["palette_latent"], labels).backward()
    assert m.unet.conv_out.weight.grad.abs().sum() > 0
    with torch.no_grad():
        lut = torch.cat([m.palette, torch.full((237, 3), -1.0)])
        z_y = m._encode((lut[labels].permute(0, 3, 1, 2) + 1) / 2)
        assert m.lplr_loss(z_y, labels).item() == 0.0                            # perfect regression: no loss
        assert m.lplr_loss(z_y + 1, labels).item() == pytest.approx(1.0)
        assert m.lplr_loss(z_y + 1, torch.full_like(labels, 255)).item() == 0.0   # nothing labelled: nothing counted
        base = m(x)["logits"]
        m.set_dplg_timestep(30)
        assert not torch.allclose(m(x)["logits"], base)                          # DPLG predicts on noised latents


def test_sd_unet_input_is_the_authors_add_noise(env):
    """MADM's add_noise: z_t = √ᾱ_t·z0 + √(1−ᾱ_t)·ε_fixed for every t, t = 0 included, with the seed-42
    64x64 noise resized bicubically to the latent size."""
    from zodicli.seg.models import build_model

    m = build_model("sd_unet", sd_model=str(env / "tiny/sd")).eval()
    seen = []
    m.unet.register_forward_pre_hook(lambda mod, args, kw: seen.append((kw.get("sample", args[0] if args else None))),
                                     with_kwargs=True)
    x = torch.randn(1, 3, 32, 64)
    x01 = (x * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) + torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)).clamp(0, 1)
    z0 = m.vae.encode(x01 * 2 - 1).latent_dist.mean * m.vae.config.scaling_factor
    eps = torch.nn.functional.interpolate(torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(42)), size=(16, 32),
                                          mode="bicubic", align_corners=False)
    with torch.no_grad():
        for t in (0, 30):
            m.set_dplg_timestep(t)
            m(x)
            a = float(m.alphas[t])
            assert torch.allclose(seen[-1], a ** 0.5 * z0 + (1 - a) ** 0.5 * eps, atol=1e-6)
    assert not torch.equal(seen[0], z0)


def test_sd_unet_condition_is_the_authors_prompt_and_time_embedding(env):
    """MADM's ClipFeatureProject (same_cond_params): the UNet sees e = tanh(α_u)⊙e_∅ + tanh(α_c)⊙p,
    and its time embedding plus tanh(α_τ)⊙τ; at initialisation α ~ U(0, 1), α_τ = 0 (the time term
    starts at zero, its gradient does not)."""
    from zodicli.seg.models import build_model

    torch.manual_seed(0)
    m = build_model("sd_unet", sd_model=str(env / "tiny/sd")).train()
    assert 0 <= m.alpha_cond.min() and m.alpha_cond.max() < 1 and m.alpha_cond.shape == m.empty.shape
    assert not m.alpha_time.any() and 0 < m.prompt.std() < 0.03 and m.prompt.abs().max() <= 2
    with torch.no_grad():
        m.alpha_time.fill_(0.5)
    seen = {}
    m.unet.register_forward_pre_hook(lambda mod, args, kw: seen.update(e=kw["encoder_hidden_states"]), with_kwargs=True)
    m.unet.up_blocks[0].resnets[0].register_forward_pre_hook(lambda mod, args: seen.update(temb=args[1]))
    m(torch.randn(2, 3, 32, 64))
    a_u, a_c = m.alpha_uncond.detach().numpy(), m.alpha_cond.detach().numpy()
    expected_e = np.tanh(a_u) * m.empty.numpy() + np.tanh(a_c) * m.prompt.detach().numpy()
    assert seen["e"].shape[0] == 2 and np.allclose(seen["e"][1].detach().numpy(), expected_e[0], atol=1e-6)
    with torch.no_grad():                     # the UNet's own time embedding at t = 0, called without hooks
        own = m.unet.time_embedding.forward(m.unet.time_proj(torch.zeros(1)).to(m.unet.dtype))
    expected_t = own.numpy() + np.tanh(0.5) * m.time_offset.detach().numpy()
    assert np.allclose(seen["temb"][0].detach().numpy(), expected_t[0], atol=1e-6)
    with torch.no_grad():
        m.alpha_time.zero_()
    m.zero_grad()
    m(torch.randn(2, 3, 32, 64))["logits"].sum().backward()
    assert m.alpha_time.grad.abs().sum() > 0 and not m.time_offset.grad.any()
    assert m.alpha_cond.grad.abs().sum() > 0 and m.prompt.grad.abs().sum() > 0


def test_dplg_schedule_and_checks(cli, env, tmp_path):
    from zodicli.pipeline.pseudolabel import dplg_timestep
    from zodicli.seg.train import TrainConfig, train

    assert [dplg_timestep(60, 5000, i) for i in (0, 1, 2500, 4999, 5000, 6000)] == [60, 59, 30, 0, 0, 0]
    assert dplg_timestep(50, 8000, 4000) == 25
    common = dict(source="toy:clear:train", batch_size=2, crop=(64, 96), resize=None, num_workers=0, ckpt_every=1)
    train(TrainConfig(model="deeplabv3plus_r18", out=str(tmp_path / "cnn"), iters=1, **common))
    code, _, err = cli("pseudolabel", "--checkpoint", tmp_path / "cnn/last.pt", "--src", "toy:fog:val", "--out", tmp_path / "x.h5", "--dplg")
    assert code == 1 and "--dplg needs a diffusion-backbone checkpoint" in err
    train(TrainConfig(backbone="sd-unet", sd_model=str(env / "tiny/sd"), out=str(tmp_path / "sd"), iters=1,
                      optimizer="adamw", lr=1e-4, **common))
    rec = json.loads((tmp_path / "sd/metrics.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(rec["lplr"]) and np.isfinite(rec["ce_src"])
    code, out, err = cli("pseudolabel", "--checkpoint", tmp_path / "sd/last.pt", "--src", "toy:fog:val", "--out", tmp_path / "d.h5",
                         "--dplg", "--dplg-iter", "2500", "--json")
    assert code == 0, err
    assert Artifact(tmp_path / "d.h5").meta["settings"]["dplg_iter"] == 2500
    code, out, err = cli("evaluate", "--checkpoint", tmp_path / "sd/last.pt", "--dataset", "toy:fog:val", "--json")
    assert code == 0 and json.loads(out)["n_images"] == 4, err
    # MADM's 'st' LPLR: also on the pseudo-labelled target (depth, infrared)
    train(TrainConfig(backbone="sd-unet", sd_model=str(env / "tiny/sd"), out=str(tmp_path / "st"), iters=1, optimizer="adamw",
                      lr=1e-4, target="toy:fog:val", target_pl=str(tmp_path / "d.h5"), lplr_target_weight=1.0, **common))
    rec = json.loads((tmp_path / "st/metrics.jsonl").read_text().splitlines()[-1])
    assert rec["lplr_tgt"] > 0 and np.isfinite(rec["ce_pl"])
    with pytest.raises(InputError, match="--lplr-target-weight needs --backbone sd-unet and --target-pl"):
        TrainConfig(lplr_target_weight=1.0, **common).check()


def test_train_toy_resumes_and_exports_a_usable_stack(cli, tmp_path, toy_env):
    args = ["models", "train-toy", "--out", tmp_path / "tt", "--vae-steps", "2", "--batch-size", "4",
            "--corpus-per-style", "2", "--ckpt-every", "1"]
    code, out, err = cli(*args, "--steps", "2")
    assert code == 0 and "stage unet, step 2" in out, err
    state = torch.load(tmp_path / "tt/state.pt", weights_only=True)
    assert state["stage"] == "unet" and state["step"] == 2
    assert state["min_snr_from"] == state["text_from"] == 0            # the loss recipe since the first step
    assert state["offset_noise"] == [[0, 0.1]]
    from transformers import CLIPTextModel                          # the text encoder trains with the UNet
    frozen = CLIPTextModel.from_pretrained(tmp_path / "tt/text/sd/text_encoder").state_dict()
    moved = [k for k, v in state["text"].items() if not torch.equal(v, frozen[k])]
    assert any(k.endswith("token_embedding.weight") for k in moved)
    code, out, err = cli(*args, "--steps", "3", "--focus", "dusk:bus")
    assert code == 1 and err.strip().splitlines()[-1].startswith("zodi: error: --focus 'dusk:bus': expected STYLE:CLASS"), err
    code, out, err = cli(*args, "--steps", "3", "--offset-noise", "0.3", "--decoder-steps", "2", "--rare-class", "0.01",
                         "--focus", "night:car,road", "--class-weight", "0.5")
    assert code == 0 and "stage unet, step 3" in out, err                # continued, did not restart
    after = torch.load(tmp_path / "tt/state.pt", weights_only=True)
    assert after["offset_noise"] == [[0, 0.1], [2, 0.3]] and after["rare_class"] == [[2, 0.01]]
    assert after["focus"] == [[2, "night:car,road"]] and after["class_weight"] == [[2, 0.5]]
    assert after["decoder_step"] == 2 and after["decoder_on_mean_from"] == 0
    moved = {k for k, v in after["vae"].items() if not torch.equal(v, state["vae"][k])}   # the decoder alone moved
    assert moved and all(k.startswith(("decoder.", "post_quant_conv.")) for k in moved)
    assert set(after["ema"]) == set(state["ema"])
    code, out, err = cli("translate", "--src", "toy:clear:val", "--domain", "snow", "--model", tmp_path / "tt/sd",
                         "--controlnet", tmp_path / "tt/controlnet", "--short-side", "32", "--out", tmp_path / "s.h5")
    assert code == 0, err
    assert Artifact(tmp_path / "s.h5").get("images", 0).shape == (32, 64, 3)
    # A new VAE, then the UNet stage started from the first run's networks: --steps 0 stops after the VAE.
    args2 = [*args[:2], "--out", tmp_path / "tt2", *args[4:], "--seed", "1"]   # another VAE, so another latent space
    code, out, err = cli(*args2, "--steps", "0")
    assert code == 0 and "stage unet, step 0" in out, err
    from diffusers import AutoencoderKL                             # the scale is in the exported VAE already
    scale = torch.load(tmp_path / "tt2/state.pt", weights_only=True)["scale"]
    assert AutoencoderKL.load_config(tmp_path / "tt2/sd", subfolder="vae")["scaling_factor"] == scale != 0.18215
    code, out, err = cli(*args2, "--steps", "1", "--unet-from", tmp_path / "tt")
    assert code == 0 and "stage unet, step 1" in out and "the latent map leaves" in err, err
    new = torch.load(tmp_path / "tt2/state.pt", weights_only=True)
    assert new["unet_from"] == str(tmp_path / "tt")
    from diffusers import UNet2DConditionModel
    first = UNet2DConditionModel.from_pretrained(tmp_path / "tt/sd", subfolder="unet").state_dict()
    key = "mid_block.resnets.0.conv1.weight"                        # one warm-up step (lr 2.5e-6) from the first run's
    torch.testing.assert_close(new["unet"][key], first[key], atol=1e-4, rtol=0)   # weights; conv_in remapped
    assert (new["unet"]["conv_in.weight"] - first["conv_in.weight"]).abs().max() > 1e-3


def test_train_toy_stopped_and_resumed_ends_with_the_same_weights(cli, tmp_path, toy_env):
    base = ["models", "train-toy", "--vae-steps", "2", "--batch-size", "4", "--corpus-per-style", "2", "--ckpt-every", "1",
            "--rare-class", "0.01", "--focus", "night:car", "--class-weight", "0.5"]
    whole = [*base, "--out", tmp_path / "whole"]
    parts = [*base, "--out", tmp_path / "parts"]
    assert cli(*whole, "--decoder-steps", "2", "--steps", "3")[0] == 0
    for steps, decoder in (("0", "1"), ("2", "2"), ("3", "2")):     # stops inside the decoder stage and the UNet stage
        code, out, err = cli(*parts, "--decoder-steps", decoder, "--steps", steps)
        assert code == 0, err
    a = torch.load(tmp_path / "whole/state.pt", weights_only=True)
    b = torch.load(tmp_path / "parts/state.pt", weights_only=True)
    assert a["step"] == b["step"] == 3 and a["decoder_step"] == b["decoder_step"] == 2
    for part in ("vae", "unet", "cn", "text", "ema"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert a["loss"] == b["loss"]


def test_rare_class_table_by_hand():
    from zodicli.diffusion.toy_train import _rare_class_table

    labels = np.zeros((3, 4, 4), np.uint8)          # class 0 everywhere, but 8 px of 1 in scene 1, 2 px of 2 in scene 2
    labels[1, :2] = 1
    labels[2, 0, :2] = 2
    labels[0, 0, 0] = 255                           # ignored
    p, members = _rare_class_table(labels, temperature=0.1, min_pixels=2)
    f = np.array([37, 8, 2]) / 47                   # pixel shares of classes 0, 1, 2
    expected = np.exp((1 - f) / 0.1)
    np.testing.assert_allclose(p, expected / expected.sum(), rtol=1e-12)
    assert [m.tolist() for m in members] == [[0, 1, 2], [1], [2]]
    p, members = _rare_class_table(labels, temperature=0.1, min_pixels=3)   # class 2 is too small to sample
    assert len(p) == 2 and [m.tolist() for m in members] == [[0, 1, 2], [1]]


def test_class_weights_by_hand():
    from zodicli.diffusion.toy_train import _class_weights

    labels = np.zeros((1, 2, 4), np.uint8)          # 5 px of class 0, 2 px of class 1, 1 ignored
    labels[0, 1, 2:] = 1
    labels[0, 0, 0] = 255
    # power 1: class 1 weighs 5 / 2 = 2.5, class 0 and ignore 1; then the mean over each 2x2 block
    np.testing.assert_allclose(_class_weights(labels, 1.0).numpy(), [[[[1.0, (1 + 1 + 2.5 + 2.5) / 4]]]])
    np.testing.assert_allclose(_class_weights(labels, 0.5).numpy(), [[[[1.0, (2 + 2 * 2.5 ** 0.5) / 4]]]], rtol=1e-6)
    np.testing.assert_allclose(_class_weights(labels, 3.0).numpy(), [[[[1.0, (2 + 2 * 10) / 4]]]])   # 15.6, capped at 10


def test_focus_scenes_by_hand():
    from zodicli.diffusion.toy_train import CAPTIONS, _focus_scenes

    labels = np.zeros((4, 4, 4), np.uint8)          # road (0) everywhere; 3 px of bus (15) in 1 and 3, 2 px of wall (3) in 2
    labels[1, 0, :3] = labels[3, 1, :3] = 15
    labels[2, 0, :2] = 3
    captions = [CAPTIONS[s] + ", best quality" for s in ("night", "night", "night", "clear")]
    assert _focus_scenes(labels, captions, "night:bus,wall", min_pixels=2).tolist() == [1, 2]   # scene 3 is clear
    assert _focus_scenes(labels, captions, "night:bus,wall", min_pixels=3).tolist() == [1]      # too little wall
    assert _focus_scenes(labels, captions, "clear:bus", min_pixels=3).tolist() == [3]


def test_unet_from_maps_the_old_latent_space_onto_the_new(tmp_path):
    """A VAE whose latent channels are the old one's, permuted: the mapped UNet and ControlNet give
    exactly the old networks' outputs on the old latents, permuted the same way."""
    import copy

    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextModel

    from zodicli.diffusion.tiny import make_tiny
    from zodicli.diffusion.toy_train import _latent_means, _start_from

    make_tiny(tmp_path / "old")
    load = lambda cls, *a, **k: cls.from_pretrained(*a, local_files_only=True, **k).eval()
    old_vae = load(AutoencoderKL, tmp_path / "old/sd", subfolder="vae")
    unet_old, cn_old = load(UNet2DConditionModel, tmp_path / "old/sd", subfolder="unet"), load(ControlNetModel, tmp_path / "old/controlnet")
    perm = torch.tensor([2, 0, 3, 1])
    vae = copy.deepcopy(old_vae)
    with torch.no_grad():                           # the mean and log-variance channels, permuted
        vae.quant_conv.weight.copy_(old_vae.quant_conv.weight[torch.cat([perm, perm + 4])])
        vae.quant_conv.bias.copy_(old_vae.quant_conv.bias[torch.cat([perm, perm + 4])])
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z_old = _latent_means(old_vae, x) * old_vae.config.scaling_factor
    z = _latent_means(vae, x) * old_vae.config.scaling_factor
    torch.testing.assert_close(z, z_old[:, perm])
    unet, cn = copy.deepcopy(unet_old), copy.deepcopy(cn_old)
    for m in (unet, cn):                            # _start_from must overwrite every weight
        torch.nn.init.zeros_(next(m.parameters()))
    text = load(CLIPTextModel, tmp_path / "old/sd", subfolder="text_encoder")
    logged = []
    _start_from(tmp_path / "old", vae, x, z, unet, cn, text, logged.append)
    assert "leaves 0.00 of the old latents' variance" in logged[0]
    emb, t = torch.randn(6, 5, 32), torch.tensor([10, 200, 500, 700, 900, 999])
    ctrl = torch.rand(6, 3, 16, 16)
    with torch.no_grad():
        down_old, mid_old = cn_old(z_old, t, encoder_hidden_states=emb, controlnet_cond=ctrl, return_dict=False)
        down, mid = cn(z, t, encoder_hidden_states=emb, controlnet_cond=ctrl, return_dict=False)
        for a, b in zip([*down, mid], [*down_old, mid_old]):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        eps_old = unet_old(z_old, t, encoder_hidden_states=emb, down_block_additional_residuals=down_old,
                           mid_block_additional_residual=mid_old).sample
        eps = unet(z, t, encoder_hidden_states=emb, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
    torch.testing.assert_close(eps, eps_old[:, perm], atol=1e-5, rtol=1e-4)


def test_feature_caches_say_their_size_and_refuse_past_max_size(cli, env, tmp_path):
    """SD 2.1's DIFF features at 512x1024: 481 MiB per image (the stride-8 level alone 17,280 channels)."""
    from types import SimpleNamespace

    from zodicli.diffusion.features import FEATURE_TIMESTEPS, feature_bytes, feature_layout

    sd21 = SimpleNamespace(unet=SimpleNamespace(config=SimpleNamespace(block_out_channels=(320, 640, 1280, 1280))), vae_factor=8)
    names = [f"up{i}.res{j}" for i in range(4) for j in range(3)] + [f"up{i}.attn{j}" for i in range(1, 4) for j in range(3)]
    layout = feature_layout(sd21, names, FEATURE_TIMESTEPS)
    assert layout["features/s8"]["channels"] == 17_280
    assert round(feature_bytes(layout, 512, 1024) / 2**20) == 481
    args = ["extract-features", "--src", "toy:clear:val", "--model", env / "tiny/sd", "--short-side", "32", "--timesteps", "3"]
    code, _, err = cli(*args, "--max-size", "1K", "--out", tmp_path / "f.h5")
    assert code == 1 and "more than --max-size 1.0 KiB" in err and "train-seg --backbone diff-online" in err
    assert not (tmp_path / "f.h5").exists()
    code, _, err = cli(*args, "--out", tmp_path / "f.h5")
    assert code == 0 and "zodi extract-features: the output will take about" in err and "(4 items x" in err
