"""Fusion: self-ensemble transforms, weighted ensembles, weight fitting, the disagreement map."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from medsat_sr.errors import ConfigError, ModelError
from medsat_sr.fusion import (
    Ensemble,
    Member,
    Transform,
    fit_weights,
    normalise_weights,
    softmax_weights,
    tta_transforms,
)
from medsat_sr.models import build_model


def _perturbed(name: str = "edsr", *, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build_model(name, **kw)
    with torch.no_grad():
        for p in net.output_conv.parameters():
            p.normal_(0, 0.05)
    return net.eval()


# --------------------------------------------------------------------------- transforms
@pytest.mark.parametrize(
    ("scale", "count"),
    [((2, 2), 8), ((4, 1), 4), ((1, 1, 4), 8), ((2, 2, 2), 8), ((1, 2, 3), 8)],
)
def test_tta_counts_and_group_properties(scale, count):
    ts = tta_transforms(scale)
    assert len(ts) == count
    assert ts[0].is_identity
    assert len({(t.perm, t.flips) for t in ts}) == count  # distinct
    x = torch.rand(1, 2, *([6] * len(scale)))
    for t in ts:
        assert torch.equal(t.invert(t.apply(x)), x)
        # only axes with equal factors are exchanged
        for i, p in enumerate(t.perm):
            assert scale[i] == scale[p]


def test_tta_anisotropic_never_moves_the_thick_axis():
    for t in tta_transforms((1, 1, 4), None):
        assert t.perm[2] == 2
    first8 = tta_transforms((1, 1, 4))
    assert all(2 not in t.flips for t in first8)  # D4 in-plane first
    assert len(tta_transforms((1, 1, 4), None)) == 16
    assert len(tta_transforms((2, 2, 2), None)) == 48


def test_transform_size_follows_the_permutation():
    t = Transform((1, 0), (0,))
    assert t.size((10, 20)) == (20, 10)
    y = t.apply(torch.rand(1, 1, 10, 20))
    assert y.shape[-2:] == (20, 10)


# --------------------------------------------------------------------------- weights
def test_normalise_weights():
    assert normalise_weights(None, 4) == [0.25] * 4
    assert normalise_weights([1, 3], 2) == [0.25, 0.75]
    for bad in ([1], [-1, 2], [0, 0], [float("nan"), 1]):
        with pytest.raises(ConfigError):
            normalise_weights(bad, 2)


def test_fit_weights_lstsq_recovers_a_convex_combination():
    rng = np.random.default_rng(0)
    a, b, c = (rng.random((32, 32)) for _ in range(3))
    target = 0.2 * a + 0.5 * b + 0.3 * c
    w = fit_weights([a, b, c], target, method="lstsq")
    assert np.allclose(w, [0.2, 0.5, 0.3], atol=1e-3)
    assert abs(sum(w) - 1) < 1e-9 and min(w) >= 0
    # a useless member gets (almost) no weight
    w = fit_weights([target + 0.01 * rng.standard_normal(target.shape), rng.random((32, 32))], target)
    assert w[0] > 0.95


def test_fit_weights_softmax_prefers_the_better_model():
    rng = np.random.default_rng(1)
    t = rng.random((16, 16))
    good, bad = t + 0.01, t + 0.1
    w = fit_weights([good, bad], t, method="softmax", data_range=1.0)
    assert w[0] > 0.99
    assert softmax_weights([30.0, 30.0]) == [0.5, 0.5]
    with pytest.raises(ConfigError):
        fit_weights([good], t, method="median")


# --------------------------------------------------------------------------- ensembles
def test_self_ensemble_of_an_equivariant_model_is_the_model():
    # an untrained model is its skip path (bicubic): equivariant under flips and transposes
    torch.manual_seed(0)
    net = build_model("edsr", spatial_dims=2, in_channels=2, scale=2, features=8, n_blocks=1).eval()
    x = torch.rand(1, 2, 13, 17)
    plain = Ensemble([Member(net)]).predict(x, (26, 34))[0]
    tta = Ensemble([Member(net)], transforms=tta_transforms((2, 2)), uncertainty=True)
    mean, var = tta.predict(x, (26, 34))
    assert torch.allclose(mean, plain, atol=1e-5)
    assert var is not None and float(var.max()) < 1e-9


def test_identical_members_have_zero_std_and_weighted_mean():
    net = _perturbed(spatial_dims=2, in_channels=1, scale=2, features=8, n_blocks=1)
    x = torch.rand(2, 1, 12, 9)
    ens = Ensemble([Member(net), Member(net, weight=3.0)], uncertainty=True)
    mean, var = ens.predict(x, (24, 18))
    single = Ensemble([Member(net)]).predict(x, (24, 18))[0]
    assert torch.allclose(mean, single, atol=1e-6)
    assert var is not None and float(var.abs().max()) == 0.0


def test_ensemble_mean_and_variance_are_the_weighted_moments():
    a = _perturbed(spatial_dims=2, in_channels=1, scale=2, features=8, n_blocks=1, seed=1)
    b = _perturbed(spatial_dims=2, in_channels=1, scale=2, features=8, n_blocks=1, seed=2)
    x = torch.rand(1, 1, 10, 11)
    with torch.no_grad():
        pa, pb = a(x, output_size=(20, 22)), b(x, output_size=(20, 22))
    mean, var = Ensemble([Member(a, weight=1), Member(b, weight=3)], uncertainty=True).predict(x, (20, 22))
    ref = 0.25 * pa + 0.75 * pb
    assert torch.allclose(mean, ref, atol=1e-5)
    assert torch.allclose(var, 0.25 * (pa - ref) ** 2 + 0.75 * (pb - ref) ** 2, atol=1e-5)


def test_ensemble_normalises_each_member_in_physical_units():
    from medsat_sr.normalise import Normaliser

    net = _perturbed(spatial_dims=2, in_channels=1, scale=2, features=8, n_blocks=1)
    norm = Normaliser(method="linear", spec={}, scale=[0.01], offset=[-1.0])
    x = torch.rand(1, 1, 8, 8) * 300 + 100
    mean, _ = Ensemble([Member(net, normaliser=norm)]).predict(x, (16, 16))
    with torch.no_grad():
        ref = (net((x * 0.01 - 1.0), output_size=(16, 16)) + 1.0) / 0.01
    assert torch.allclose(mean, ref, rtol=1e-5, atol=1e-3)


def test_ensemble_refuses_mixed_dims_and_bad_precision():
    a = build_model("edsr", spatial_dims=2, in_channels=1, scale=2, features=4, n_blocks=1)
    b = build_model("edsr", spatial_dims=3, in_channels=1, scale=2, features=4, n_blocks=1)
    with pytest.raises(ModelError):
        Ensemble([Member(a), Member(b)])
    with pytest.raises(ModelError):
        Ensemble([])
    with pytest.raises(ConfigError):
        Ensemble([Member(a)], precision="fp16")


def test_bf16_is_close_to_fp32():
    net = _perturbed(spatial_dims=2, in_channels=1, scale=2, features=16, n_blocks=2)
    x = torch.rand(1, 1, 24, 24)
    a = Ensemble([Member(net)]).predict(x, (48, 48))[0]
    b = Ensemble([Member(net)], precision="bf16").predict(x, (48, 48))[0]
    assert float((a - b).abs().max() / a.abs().max()) < 0.02


def test_guided_members_get_the_same_transform_on_guide_and_coarse():
    torch.manual_seed(0)
    net = build_model("guided", spatial_dims=2, in_channels=2, guide_channels=3, scale=2, features=8, n_blocks=1).eval()
    coarse, guide = torch.rand(1, 2, 10, 12), torch.rand(1, 3, 20, 24)
    plain = Ensemble([Member(net)]).predict(coarse, (20, 24), guide=guide)[0]
    tta = Ensemble([Member(net)], transforms=tta_transforms((2, 2))).predict(coarse, (20, 24), guide=guide)[0]
    assert torch.allclose(plain, tta, atol=1e-5)  # untrained: bicubic skip, equivariant
    with pytest.raises(ModelError):
        Ensemble([Member(net)]).predict(coarse, (20, 24))


def test_transforms_cover_all_signed_permutations_of_equal_axes():
    ts = tta_transforms((3, 3), None)
    seen = {(t.perm, t.flips) for t in ts}
    want = {(p, f) for p in itertools.permutations(range(2)) for r in range(3) for f in itertools.combinations(range(2), r)}
    assert seen == want
