"""Tests of medsat_sr.normalise: round trips, statistics without nodata, JSON, inference re-fit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from medsat_sr.domains import MetricSpec, load_domain
from medsat_sr.errors import ConfigError, DataError, ModelError
from medsat_sr.image import make_raster, make_volume
from medsat_sr.normalise import Normaliser, data_range, valid_mask


def _raster(data: np.ndarray, **kw: object) -> torch.Tensor:
    return make_raster(data, (10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0), crs=None, **kw)


@pytest.mark.parametrize("domain", ["ct", "mri", "sentinel2_l2a", "landsat8_9", "rgbn_aerial", "multiband"])
def test_round_trip_every_method(domain: str) -> None:
    rng = np.random.default_rng(0)
    prof = load_domain(domain)
    if prof.kind == "volume":
        img = make_volume(rng.uniform(-1000, 2000, (1, 8, 9, 10)).astype(np.float32), np.eye(4))
    else:
        img = _raster(rng.integers(1, 5000, (3, 12, 11)).astype(np.float32), source_dtype="uint16")
    n = Normaliser.fit(img, prof)
    x = img.as_tensor()
    y = n.forward(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    if not n.clip:
        assert torch.allclose(n.inverse(y), x, rtol=1e-5, atol=1e-3)
    # JSON round trip gives the same mapping
    d = json.loads(json.dumps(n.to_dict()))
    n2 = Normaliser.from_dict(d)
    assert torch.equal(n2.forward(x), y)
    assert n2.method == prof.normalisation.method


def test_hu_window_maps_window_to_unit_interval() -> None:
    n = Normaliser.fit(torch.tensor([[[-1024.0, 3071.0]]]), load_domain("ct"))
    assert torch.allclose(n.forward(torch.tensor([[[-1024.0, 3071.0, 1023.5]]])), torch.tensor([[[0.0, 1.0, 0.5]]]))
    assert n.stats["window"] == [-1024.0, 3071.0]


def test_percentile_statistics_exclude_nodata_and_nan() -> None:
    rng = np.random.default_rng(1)
    data = rng.uniform(100, 200, (2, 20, 20)).astype(np.float32)
    data[:, :10] = -9999.0  # nodata half, far outside the valid range
    data[0, 15, 15] = np.nan
    img = _raster(data, nodata=-9999.0)
    n = Normaliser.fit(img, load_domain("multiband"))
    valid = data[1, 10:]
    lo, hi = np.percentile(valid, [0.5, 99.5])
    assert n.stats["p_low"][1] == pytest.approx(lo, rel=1e-6)
    assert n.stats["p_high"][1] == pytest.approx(hi, rel=1e-6)
    assert 100 <= n.stats["p_low"][0] < n.stats["p_high"][0] <= 200  # neither nodata nor NaN counted
    assert n.nodata == -9999.0


def test_percentile_nonzero_mask_excludes_background() -> None:
    data = np.zeros((1, 10, 10, 10), dtype=np.float32)
    data[0, 3:7, 3:7, 3:7] = np.linspace(50, 150, 64).reshape(4, 4, 4)
    n = Normaliser.fit(make_volume(data, np.eye(4)), load_domain("mri"))
    assert n.stats["p_low"][0] >= 50.0  # the zero background does not set the scale
    y = n.forward(torch.from_numpy(data))
    assert float(y.max()) == pytest.approx(1.0, abs=0.02)


def test_percentile_extra_mask_and_per_channel() -> None:
    data = np.stack([np.arange(100, dtype=np.float32).reshape(10, 10), 10 * np.arange(100, dtype=np.float32).reshape(10, 10)])
    mask = np.zeros((10, 10), dtype=bool)
    mask[5:] = True  # only values 50..99 count
    n = Normaliser.fit(_raster(data), load_domain("multiband"), mask=mask)
    assert n.stats["p_low"][0] >= 50 and n.stats["p_low"][1] >= 500


def test_constant_image_gets_unit_range() -> None:
    n = Normaliser.fit(_raster(np.full((1, 4, 4), 7.0, dtype=np.float32)), load_domain("multiband"))
    assert n.scale[0] == 1.0 and torch.allclose(n.forward(torch.full((1, 2, 2), 7.0)), torch.zeros(1, 2, 2))


def test_all_nodata_channel_is_refused() -> None:
    data = np.zeros((1, 4, 4), dtype=np.float32)
    with pytest.raises(DataError, match="no valid values"):
        Normaliser.fit(_raster(data, nodata=0.0), load_domain("multiband"))


def test_reflectance_profile_and_file_scale_offset() -> None:
    prof = load_domain("sentinel2_l2a")
    dn = np.full((1, 3, 3), 3000.0, dtype=np.float32)
    # integer DN, unknown baseline: reflectance = DN / 10000
    n = Normaliser.fit(_raster(dn, source_dtype="uint16"), prof)
    assert torch.allclose(n.forward(torch.from_numpy(dn)), torch.full((1, 3, 3), 0.3))
    # baseline 04.00 adds -1000 DN
    n = Normaliser.fit(_raster(dn, source_dtype="uint16"), prof, processing_baseline="04.00")
    assert torch.allclose(n.forward(torch.from_numpy(dn)), torch.full((1, 3, 3), 0.2))
    # the reader already applied a file scale/offset: the values are reflectance
    phys = dn * 1e-4 - 0.1
    img = _raster(phys, source_dtype="uint16", scales=[1e-4], offsets=[-0.1])
    n = Normaliser.fit(img, prof)
    assert n.scale == [1.0] and n.offset == [0.0]
    # float input is reflectance already
    n = Normaliser.fit(_raster(np.full((1, 2, 2), 0.25, dtype=np.float32)), prof)
    assert n.scale == [1.0]


def test_reflectance_can_undo_the_file_scale_offset() -> None:
    from medsat_sr.domains import Reflectance

    spec = Reflectance(method="reflectance", scale=1e-4, add_offset=0.0, use_file_scale_offset=False)
    phys = np.full((1, 2, 2), 2000 * 2.0 + 5.0, dtype=np.float32)  # file: DN * 2 + 5
    n = Normaliser.fit(torch.from_numpy(phys), spec, dtype="uint16", file_scale_offset=([2.0], [5.0]))
    assert torch.allclose(n.forward(torch.from_numpy(phys)), torch.full((1, 2, 2), 0.2))


def test_linear_dtype_scale() -> None:
    n = Normaliser.fit(_raster(np.full((4, 2, 2), 255.0, dtype=np.float32), source_dtype="uint8"), load_domain("rgbn_aerial"))
    assert n.forward(torch.full((4, 1, 1), 255.0)).flatten().tolist() == pytest.approx([1.0] * 4)
    n = Normaliser.fit(torch.full((1, 2, 2), 65535.0), {"method": "linear", "scale": "dtype"}, dtype="uint16")
    assert float(n.forward(torch.full((1, 1, 1), 65535.0))) == pytest.approx(1.0)


def test_for_inference_refits_percentiles_but_keeps_fixed_mappings() -> None:
    rng = np.random.default_rng(2)
    a = make_volume(rng.uniform(10, 100, (1, 6, 6, 6)).astype(np.float32), np.eye(4))
    b = make_volume(rng.uniform(1000, 5000, (1, 6, 6, 6)).astype(np.float32), np.eye(4))
    stored = Normaliser.fit(a, load_domain("mri")).to_dict()
    nb = Normaliser.for_inference(stored, b)
    assert nb.stats["p_low"][0] > 900  # re-fitted on the new scan
    ct = Normaliser.fit(a, load_domain("ct")).to_dict()
    nc = Normaliser.for_inference(ct, b)
    assert nc.scale == Normaliser.from_dict(ct).scale  # the HU window does not depend on the scan
    with pytest.raises(ModelError):
        Normaliser.for_inference(None, b)
    assert Normaliser.for_inference(None, b, spec=load_domain("mri")).method == "percentile"


def test_forward_batched_and_broadcast_channels() -> None:
    n = Normaliser(method="linear", spec={}, scale=[2.0, 3.0], offset=[0.0, 1.0])
    x = torch.ones(5, 2, 4, 4)
    y = n.forward(x, channel_dim=1)
    assert torch.allclose(y[:, 0], torch.full((5, 4, 4), 2.0)) and torch.allclose(y[:, 1], torch.full((5, 4, 4), 4.0))
    with pytest.raises(DataError):
        n.forward(torch.ones(3, 4, 4))


def test_valid_mask_and_data_range() -> None:
    x = torch.tensor([[[1.0, float("nan")], [0.0, 5.0]]])
    m = valid_mask(x, nodata=0.0)
    assert m.tolist() == [[[True, False], [False, True]]]
    n = Normaliser(method="percentile", spec={}, scale=[1.0], offset=[0.0])
    spec = MetricSpec(data_range="reference_range", mask={"kind": "valid"})
    assert data_range(spec, torch.tensor([[0.5, 2.0]]), n) == pytest.approx(1.5)
    fixed = MetricSpec(data_range="fixed", data_range_value=255.0, mask={"kind": "none"})
    assert data_range(fixed, torch.zeros(1, 2), Normaliser("linear", {}, [1 / 255], [0.0])) == pytest.approx(1.0)


def test_bad_specs_are_refused() -> None:
    with pytest.raises(ConfigError):
        Normaliser.fit(torch.ones(1, 2, 2), {"method": "nope"})
    with pytest.raises(ModelError):
        Normaliser.from_dict({"format": "x"})
    with pytest.raises(DataError):
        Normaliser.fit(torch.ones(4), load_domain("ct"))
    d = Normaliser.fit(torch.ones(1, 2, 2), load_domain("ct")).to_dict()
    d["scale"] = [0.0]
    with pytest.raises(ModelError):
        Normaliser.from_dict(d)
    assert math.isfinite(Normaliser.from_dict(Normaliser.fit(torch.ones(1, 2, 2), load_domain("ct")).to_dict()).scale[0])
