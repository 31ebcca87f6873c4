"""Tests of medsat_sr.models: shapes, identity at init, precision, receptive field, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from medsat_sr.errors import ModelError
from medsat_sr.geometry import scaled_shape
from medsat_sr.models import (
    DISCRIMINATORS,
    MODELS,
    GuidedSR,
    SRModel,
    adapt_channels,
    build_discriminator,
    build_model,
    freeze_blocks,
    freeze_body,
    unfreeze,
    voxel_shuffle,
)
from medsat_sr.models.upsample import shuffle_stages

GENERATORS = ["edsr", "rcan", "srresnet", "dcsrn", "guided"]

# Tiny widths: these tests check contracts, not quality.
TINY = {
    "edsr": {"features": 8, "n_blocks": 2},
    "rcan": {"features": 8, "n_groups": 2, "n_blocks": 1, "reduction": 4},
    "srresnet": {"features": 8, "n_blocks": 2},
    "dcsrn": {"features": 8, "growth": 4, "n_blocks": 2, "n_layers": 2},
    "guided": {"features": 8, "n_blocks": 2, "guide_channels": 3},
}

SHAPE_2D = (7, 9)
SHAPE_3D = (5, 7, 9)
CASES = {
    2: [
        (2, None),
        ((2, 1), None),
        ((3, 2), None),
        (2, "pre"),
        ((1.5, 2.5), None),
        ((1.5, 2.5), "post"),
    ],
    3: [
        ((1, 1, 4), None),
        ((2, 2, 2), None),
        ((2, 2, 1), None),
        ((1, 1, 4.8), None),
        ((1, 1, 4), "pre"),
    ],
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def make(name: str, spatial_dims: int, scale, in_channels: int = 2, upsample=None, **kw) -> SRModel:
    kwargs = {**TINY[name], **kw}
    if upsample is not None and name != "guided":  # the guided net is always "pre"
        kwargs["upsample"] = upsample
    return build_model(
        name, spatial_dims=spatial_dims, in_channels=in_channels, scale=scale, **kwargs
    )


def run(model: SRModel, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
    """Forward, inventing a guide for the guided net when none is given."""
    if isinstance(model, GuidedSR) and model.use_guide:
        if guide is None:
            g = torch.Generator().manual_seed(1)
            size = model.output_size(x.shape[2:])
            guide = torch.randn(x.shape[0], model.guide_channels, *size, generator=g)
        return model(x, guide)
    return model(x)


def reference_interp(x: torch.Tensor, size) -> torch.Tensor:
    mode = "bicubic" if x.ndim == 4 else "trilinear"
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


@torch.no_grad()
def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Variance-preserving random weights everywhere (the body is zero at init)."""
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)):
            fan_in = m.weight[0].numel()
            m.weight.normal_(0.0, 1.0 / math.sqrt(fan_in))
            if m.bias is not None:
                m.bias.normal_(0.0, 0.1)
    return model


def inputs(spatial_dims: int, channels: int = 2, batch: int = 1) -> torch.Tensor:
    shape = SHAPE_2D if spatial_dims == 2 else SHAPE_3D
    return torch.randn(batch, channels, *shape)


# ----------------------------------------------------------- shape and init
@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_output_shape_and_identity_at_init(name: str, spatial_dims: int) -> None:
    x = inputs(spatial_dims)
    for scale, upsample in CASES[spatial_dims]:
        model = make(name, spatial_dims, scale, upsample=upsample).eval()
        factors = scale if isinstance(scale, tuple) else (scale,) * spatial_dims
        expected = tuple(int(math.floor(n * s + 0.5)) for n, s in zip(x.shape[2:], factors))
        with torch.no_grad():
            y = run(model, x)
        assert y.shape == (1, 2, *expected), (scale, upsample)
        assert y.dtype == torch.float32
        # zero-initialised output layer: an untrained model is the interpolation baseline
        torch.testing.assert_close(y, reference_interp(x, expected), rtol=0, atol=1e-6)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_upsample_default_mode(spatial_dims: int) -> None:
    ones = (1,) * (spatial_dims - 1)
    assert make("edsr", spatial_dims, (*ones, 4)).upsample == "post"
    assert make("edsr", spatial_dims, (*ones, 4.8)).upsample == "pre"
    assert make("edsr", spatial_dims, (*ones, 4.8), upsample="post").shuffle_factors[-1] == 5
    # scales from medsat_sr.geometry are numpy arrays
    model = make("edsr", spatial_dims, np.array([*ones, 3]))
    assert model.scale == (*map(float, ones), 3.0)
    json.dumps(model.config)


def test_explicit_output_size() -> None:
    x = inputs(2)
    model = randomize(make("edsr", 2, (1, 4.8))).eval()
    assert run(model, x).shape[2:] == (7, 43)  # round(9 * 4.8) = round(43.2)
    assert model(x, output_size=(7, 44)).shape[2:] == (7, 44)
    post = randomize(make("edsr", 2, 2)).eval()
    assert post(x, output_size=(15, 17)).shape[2:] == (15, 17)  # residual resampled
    with pytest.raises(ModelError, match="output_size"):
        post(x, output_size=(15,))
    with pytest.raises(ModelError, match="output_size"):
        post(x, output_size=(15, 0))


@pytest.mark.parametrize("in_ch, out_ch", [(3, 2), (1, 2)])
def test_skip_channel_mapping(in_ch: int, out_ch: int) -> None:
    model = make("edsr", 2, 2, in_channels=in_ch, out_channels=out_ch).eval()
    x = inputs(2, in_ch)
    y = model(x)
    idx = [i % in_ch for i in range(out_ch)]
    torch.testing.assert_close(y, reference_interp(x[:, idx], (14, 18)), rtol=0, atol=1e-6)


# ----------------------------------------------------- precision and layout
@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_bf16_autocast_close_to_fp32(name: str, spatial_dims: int) -> None:
    scale = (2, 1) if spatial_dims == 2 else (1, 1, 2)
    model = randomize(make(name, spatial_dims, scale)).eval()
    x = inputs(spatial_dims)
    with torch.no_grad():
        ref = run(model, x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = run(model, x)
    assert low.dtype == torch.float32
    skip = reference_interp(x, ref.shape[2:])
    assert (ref - skip).abs().max() > 1e-2  # the body really contributes
    rel = (low - ref).norm() / ref.norm()
    rel_residual = ((low - skip) - (ref - skip)).norm() / (ref - skip).norm()
    assert rel < 1e-2, rel
    assert rel_residual < 5e-2, rel_residual


@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_channels_last(name: str, spatial_dims: int) -> None:
    fmt = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    scale = 2 if spatial_dims == 2 else (1, 2, 2)
    model = randomize(make(name, spatial_dims, scale)).eval()
    x = inputs(spatial_dims)
    with torch.no_grad():
        ref = run(model, x)
        model = model.to(memory_format=fmt)
        out = run(model, x.contiguous(memory_format=fmt))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------- receptive field
def _measured_reach(model: SRModel, x: torch.Tensor) -> list[float]:
    """Perturb the centre input pixel; per-axis distance (input pixels) of changed outputs."""
    centre = tuple(n // 2 for n in x.shape[2:])
    guide = None
    if isinstance(model, GuidedSR):
        guide = torch.randn(1, model.guide_channels, *model.output_size(x.shape[2:]))
    with torch.no_grad():
        y0 = run(model, x, guide)
        x1 = x.clone()
        x1[(0, 0, *centre)] += 5.0
        diff = (run(model, x1, guide) - y0).abs().amax(dim=(0, 1))
    changed = diff > 1e-5 * diff.max()
    idx = changed.nonzero()
    reach = []
    for ax, (n_in, n_out) in enumerate(zip(x.shape[2:], y0.shape[2:])):
        pos = (idx[:, ax].double() + 0.5) * n_in / n_out - 0.5  # output centres in input pixels
        reach.append(float((pos - centre[ax]).abs().max()))
    return reach


def _outside_mask(model: SRModel, x: torch.Tensor, out_shape) -> torch.Tensor:
    centre = [n // 2 for n in x.shape[2:]]
    mask = torch.zeros(out_shape, dtype=torch.bool)
    grids = torch.meshgrid(*[torch.arange(n) for n in out_shape], indexing="ij")
    for ax, (n_in, n_out) in enumerate(zip(x.shape[2:], out_shape)):
        pos = (grids[ax].double() + 0.5) * n_in / n_out - 0.5
        mask |= (pos - centre[ax]).abs() > model.receptive_field_per_axis[ax]
    return mask


# "post" anisotropic, "pre" non-integer (2D), "pre" anisotropic (3D, two nets only: time)
RF_CASES = {
    2: [((2, 1), None), ((1.5, 2.5), None)],
    3: [((1, 1, 2), None), ((2, 1, 1), "pre")],
}
RF_3D_PRE = {"edsr", "srresnet"}


@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_receptive_field_bounds_measured(name: str, spatial_dims: int) -> None:
    size = (31, 31) if spatial_dims == 2 else (23, 23, 23)
    for scale, upsample in RF_CASES[spatial_dims]:
        if spatial_dims == 3 and upsample == "pre" and name not in RF_3D_PRE:
            continue
        model = randomize(make(name, spatial_dims, scale, in_channels=1, upsample=upsample)).eval()
        assert isinstance(model.receptive_field, int)
        assert model.receptive_field == max(model.receptive_field_per_axis)
        x = torch.randn(1, 1, *size)
        assert all(n > 2 * r + 1 for n, r in zip(size, model.receptive_field_per_axis)), (
            "test input too small for this receptive field"
        )
        if model.global_context:
            # RCAN: channel attention pools globally; the conv reach holds up to a weak tail
            guide = None
            if isinstance(model, GuidedSR):
                guide = torch.randn(1, model.guide_channels, *model.output_size(size))
            with torch.no_grad():
                y0 = run(model, x, guide)
                x1 = x.clone()
                x1[(0, 0, *[n // 2 for n in size])] += 5.0
                diff = (run(model, x1, guide) - y0).abs().amax(dim=(0, 1))
            outside = _outside_mask(model, x, y0.shape[2:])
            assert diff[outside].max() < 1e-2 * diff.max()
            continue
        reach = _measured_reach(model, x)
        for ax, r in enumerate(reach):
            assert r <= model.receptive_field_per_axis[ax] + 1e-9, (scale, ax, r)
            # and the bound is not wildly loose
            assert r >= model.receptive_field_per_axis[ax] - 3, (scale, ax, r)


# ----------------------------------------------------------------- training
@pytest.mark.parametrize(
    "name, spatial_dims",
    [(n, 2) for n in GENERATORS] + [("edsr", 3), ("dcsrn", 3)],
)
def test_gradient_steps_reduce_l1(name: str, spatial_dims: int) -> None:
    scale = 2 if spatial_dims == 2 else (1, 1, 2)
    model = make(name, spatial_dims, scale).train()
    x = inputs(spatial_dims, batch=2)
    guide = None
    if isinstance(model, GuidedSR):
        guide = torch.randn(2, model.guide_channels, *model.output_size(x.shape[2:]))
    target = reference_interp(x, model.output_size(x.shape[2:])) + 0.3 * torch.randn(
        2, 2, *model.output_size(x.shape[2:])
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = F.l1_loss(run(model, x, guide), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    # past the first step the gradient reaches the head through the (now non-zero) tail
    assert model.input_conv.weight.grad.abs().sum() > 0


# -------------------------------------------------------------- build/config
def test_models_is_a_plain_dict() -> None:
    assert type(MODELS) is dict and type(DISCRIMINATORS) is dict
    assert set(GENERATORS) | {"unguided"} == set(MODELS)


def test_unknown_name_hints() -> None:
    with pytest.raises(ModelError, match="did you mean 'edsr'"):
        build_model("edsrr", spatial_dims=2, in_channels=1, scale=2)
    with pytest.raises(ModelError, match="available"):
        build_model("unet", spatial_dims=2, in_channels=1, scale=2)
    with pytest.raises(ValueError):  # ModelError is a ValueError
        build_model("nope")


def test_bad_kwargs() -> None:
    with pytest.raises(ModelError, match=r"'n_block'.*did you mean 'n_blocks'.*accepted"):
        build_model("edsr", spatial_dims=2, in_channels=1, scale=2, n_block=2)
    with pytest.raises(ModelError, match="needs argument.*in_channels"):
        build_model("rcan", spatial_dims=2, scale=2)
    bad = [
        {"spatial_dims": 4},
        {"spatial_dims": True},
        {"scale": 0.5},
        {"scale": (2, 2, 2)},
        {"scale": float("nan")},
        {"scale": "2"},
        {"upsample": "bilinear"},
        {"features": 0},
        {"features": True},
        {"kernel_size": 4},
        {"in_channels": 0},
        {"res_scale": 0},
    ]
    for override in bad:
        kwargs = {"spatial_dims": 2, "in_channels": 1, "scale": 2, **override}
        with pytest.raises(ModelError):
            build_model("edsr", **kwargs)


def test_forward_input_errors() -> None:
    model = make("edsr", 2, 2)
    with pytest.raises(ModelError, match="channels"):
        model(torch.randn(1, 3, 7, 9))
    with pytest.raises(ModelError, match="shape"):
        model(torch.randn(1, 2, 5, 7, 9))
    with pytest.raises(ModelError, match="floating"):
        model(torch.zeros(1, 2, 7, 9, dtype=torch.int16))


@pytest.mark.parametrize("name", GENERATORS + ["unguided"])
def test_config_round_trip(name: str) -> None:
    kwargs = {k: v for k, v in TINY["guided" if name == "unguided" else name].items()}
    if name == "unguided":
        kwargs.pop("guide_channels")
    model = build_model(name, spatial_dims=3, in_channels=2, scale=(1, 1, 4.8), **kwargs)
    cfg = json.loads(json.dumps(model.config))
    assert cfg["name"] in MODELS
    again = build_model(cfg["name"], **cfg["kwargs"])
    assert again.config == model.config
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert again.receptive_field == model.receptive_field


def test_guided_needs_guide() -> None:
    model = make("guided", 2, 2)
    x = inputs(2)
    with pytest.raises(ModelError, match="guide"):
        model(x)
    with pytest.raises(ModelError, match="guide size"):
        model(x, torch.randn(1, 3, 20, 18))
    with pytest.raises(ModelError, match="3 channels"):
        model(x, torch.randn(1, 2, 14, 18))
    with pytest.raises(ModelError, match="guide_channels"):
        build_model("guided", spatial_dims=2, in_channels=2, scale=2)
    # the unguided twin runs without a guide and starts as interpolation
    plain = build_model("unguided", spatial_dims=2, in_channels=2, scale=2, features=8, n_blocks=1)
    assert plain.config["kwargs"]["use_guide"] is False
    torch.testing.assert_close(plain(x), reference_interp(x, (14, 18)), rtol=0, atol=1e-6)


def test_guided_uses_guide() -> None:
    model = randomize(make("guided", 2, 2)).eval()
    x = inputs(2)
    g1, g2 = torch.randn(1, 3, 14, 18), torch.randn(1, 3, 14, 18)
    with torch.no_grad():
        assert not torch.allclose(model(x, g1), model(x, g2))


# ----------------------------------------------------------------- finetune
@pytest.mark.parametrize("name", ["edsr", "srresnet", "guided"])
def test_adapt_channels_one_to_three(name: str) -> None:
    model = randomize(make(name, 2, 2, in_channels=1)).eval()
    adapted = adapt_channels(model, 3, 3).eval()
    assert adapted.in_channels == 3 and adapted.out_channels == 3
    assert model.in_channels == 1  # original untouched
    x = inputs(2, 1)
    guide = torch.randn(1, 3, 14, 18) if name == "guided" else None
    with torch.no_grad():
        y1 = run(model, x, guide)
        y3 = run(adapted, x.repeat(1, 3, 1, 1), guide)
    for c in range(3):
        torch.testing.assert_close(y3[:, c : c + 1], y1, rtol=1e-5, atol=1e-5)


def test_adapt_channels_three_to_one_and_state_dict() -> None:
    model = randomize(make("dcsrn", 3, (1, 1, 2), in_channels=3)).eval()
    adapted = adapt_channels(model, 1, 1).eval()
    x = inputs(3, 1)
    with torch.no_grad():
        expected = model(x.repeat(1, 3, 1, 1, 1))[:, :1]
        torch.testing.assert_close(adapted(x), expected, rtol=1e-5, atol=1e-5)
    sd = adapt_channels(model.state_dict(), new_in=5)
    assert sd["input_conv.weight"].shape[1] == 5
    assert sd["output_conv.weight"].shape[0] == 3
    with pytest.raises(ModelError, match="input_conv.weight"):
        adapt_channels({"conv.weight": torch.zeros(1)}, 2, 2)
    with pytest.raises(ModelError, match="new_in"):
        adapt_channels(model, 0)


def test_freeze_helpers() -> None:
    model = make("rcan", 2, 2)
    frozen = freeze_blocks(model, 1)
    assert "input_conv.weight" in frozen
    assert any(n.startswith("blocks.0.") for n in frozen)
    assert not any(n.startswith("blocks.1.") for n in frozen)
    assert model.blocks[1].conv.weight.requires_grad
    with pytest.raises(ModelError, match="n must be <= 2"):
        freeze_blocks(model, 3)
    unfreeze(model)
    assert all(p.requires_grad for p in model.parameters())
    freeze_body(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("upsampler.", "output_conv.")) for n in trainable)
    assert freeze_blocks(model, 0) == []


# ---------------------------------------------------------------- upsampling
def test_voxel_shuffle_matches_pixel_shuffle_2d() -> None:
    x = torch.randn(2, 3 * 9, 4, 5)
    torch.testing.assert_close(voxel_shuffle(x, (3, 3)), torch.nn.PixelShuffle(3)(x))


def test_voxel_shuffle_anisotropic_3d() -> None:
    f = (1, 2, 3)
    x = torch.randn(1, 2 * 6, 2, 3, 4)
    y = voxel_shuffle(x, f)
    assert y.shape == (1, 2, 2, 6, 12)
    for c in range(2):
        for i in range(f[0]):
            for j in range(f[1]):
                for k in range(f[2]):
                    ch = c * 6 + (i * f[1] + j) * f[2] + k
                    torch.testing.assert_close(y[0, c, i :: f[0], j :: f[1], k :: f[2]], x[0, ch])
    with pytest.raises(ModelError, match="divisible"):
        voxel_shuffle(torch.randn(1, 5, 2, 2, 2), (1, 2, 2))
    assert shuffle_stages((1, 1, 4)) == [(1, 1, 2), (1, 1, 2)]
    assert shuffle_stages((6, 2)) == [(2, 2), (3, 1)]


# ------------------------------------------------------------ discriminator
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_discriminator_logits(spatial_dims: int) -> None:
    disc = build_discriminator(
        "patch", spatial_dims=spatial_dims, in_channels=2, features=4, n_layers=2
    )
    x = torch.randn(2, 2, *([16] * spatial_dims))
    logits = disc(x)
    assert logits.shape[:2] == (2, 1) and logits.ndim == spatial_dims + 2
    logits2, feats = disc(x, return_features=True)
    assert len(feats) >= 2
    json.dumps(disc.config)
    with pytest.raises(ModelError, match="at least 12"):
        disc(torch.randn(2, 2, *([8] * spatial_dims)))
    with pytest.raises(ModelError, match="did you mean 'patch'"):
        build_discriminator("patchh", spatial_dims=2, in_channels=1)


# ------------------------------------------------------------------ tiling
@pytest.mark.parametrize(
    "name, spatial_dims, scale",
    [("edsr", 2, (2, 1)), ("srresnet", 2, (2, 2)), ("dcsrn", 3, (1, 1, 4)), ("guided", 2, (2, 1))],
)
def test_tiles_with_receptive_field_halo_equal_whole(name: str, spatial_dims: int, scale) -> None:
    """Two tiles cut along axis 0 with a halo of ``receptive_field`` give the whole output."""
    model = randomize(make(name, spatial_dims, scale, in_channels=1)).eval()
    size = (31, 29) if spatial_dims == 2 else (27, 9, 7)
    x = torch.randn(1, 1, *size)
    s0, cut, halo = int(scale[0]), size[0] // 2, model.receptive_field_per_axis[0]
    guide = None
    if isinstance(model, GuidedSR):
        guide = torch.randn(1, model.guide_channels, *model.output_size(size))
    with torch.no_grad():
        whole = run(model, x, guide)
        a_end, b_start = cut + halo, cut - halo
        ga = gb = None
        if guide is not None:
            ga, gb = guide[:, :, : a_end * s0], guide[:, :, b_start * s0 :]
        ya = run(model, x[:, :, :a_end], ga)[:, :, : cut * s0]
        yb = run(model, x[:, :, b_start:], gb)[:, :, halo * s0 :]
    torch.testing.assert_close(torch.cat([ya, yb], dim=2), whole, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------- property: any grid
@settings(max_examples=25, deadline=None)
@given(
    spatial_dims=st.sampled_from([2, 3]),
    data=st.data(),
)
def test_any_size_and_scale_gives_scaled_shape(spatial_dims: int, data: st.DataObject) -> None:
    size = data.draw(st.tuples(*[st.integers(1, 6)] * spatial_dims), label="size")
    scale = data.draw(
        st.tuples(
            *[st.one_of(st.integers(1, 3), st.floats(1.0, 3.5, allow_nan=False))] * spatial_dims
        ),
        label="scale",
    )
    upsample = data.draw(st.sampled_from([None, "pre", "post"]), label="upsample")
    model = build_model(
        "edsr",
        spatial_dims=spatial_dims,
        in_channels=1,
        scale=scale,
        features=4,
        n_blocks=1,
        upsample=upsample,
    ).eval()
    x = torch.randn(1, 1, *size)
    with torch.no_grad():
        y = model(x)
    assert tuple(y.shape[2:]) == scaled_shape(size, scale)
    torch.testing.assert_close(y, reference_interp(x, y.shape[2:]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("res_scale", [1.0, 0.1])
def test_res_block_in_place_inference_equals_the_recorded_forward_and_leaves_its_input(res_scale: float) -> None:
    from medsat_sr.models.blocks import ResBlock

    torch.manual_seed(0)
    block = ResBlock(2, 8, 3, res_scale, init_scale=1.0)
    x = torch.randn(2, 8, 12, 10)
    kept = x.clone()
    graded = block(x)
    with torch.inference_mode():
        fast = block(x)
    assert graded.requires_grad and not fast.requires_grad
    torch.testing.assert_close(fast, graded.detach(), rtol=1e-6, atol=1e-6)
    assert torch.equal(x, kept)
    assert not torch.allclose(fast, x)  # the branch contributes
