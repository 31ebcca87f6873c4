"""Geometry contract (DESIGN.md §3): FOV-preserving scaling, raster transforms, tiling."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from medsat_sr import geometry as g
from medsat_sr.errors import GeometryError

finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False)


@st.composite
def affines(draw: st.DrawFn) -> np.ndarray:
    """Arbitrary invertible 4x4 affines: oblique, flipped, sheared, anisotropic."""
    while True:
        lin = np.array(draw(st.lists(finite, min_size=9, max_size=9)), dtype=np.float64).reshape(3, 3)
        if abs(np.linalg.det(lin)) > 1e-2 and np.linalg.cond(lin) < 1e4:
            break
        lin = lin + np.eye(3) * draw(st.sampled_from([1.0, -2.0, 3.0]))
        if abs(np.linalg.det(lin)) > 1e-2 and np.linalg.cond(lin) < 1e4:
            break
    aff = np.eye(4)
    aff[:3, :3] = lin
    aff[:3, 3] = draw(st.lists(st.floats(-500, 500), min_size=3, max_size=3))
    return aff


shapes = st.lists(st.integers(1, 300), min_size=3, max_size=3)
int_scales = st.lists(st.integers(1, 6), min_size=3, max_size=3)
real_scales = st.lists(st.floats(0.25, 6.0), min_size=3, max_size=3)


def _voxel_size(aff: np.ndarray) -> float:
    return float(np.sqrt((aff[:3, :3] ** 2).sum(axis=0)).min())


@settings(max_examples=300, deadline=None)
@given(affines(), shapes, int_scales)
def test_integer_scaling_keeps_world_extent(aff: np.ndarray, shape: list[int], scale: list[int]) -> None:
    new_shape = g.scaled_shape(shape, scale)
    assert new_shape == tuple(n * s for n, s in zip(shape, scale))
    new_aff = g.scale_affine(aff, scale)
    before = g.fov_corners(aff, shape)
    after = g.fov_corners(new_aff, new_shape)
    tol = 1e-6 * _voxel_size(new_aff)
    np.testing.assert_allclose(after, before, rtol=0, atol=max(tol, 1e-9 * np.abs(before).max()))


@settings(max_examples=300, deadline=None)
@given(affines(), shapes, real_scales)
def test_anisotropic_real_scaling_keeps_world_extent(aff: np.ndarray, shape: list[int], scale: list[float]) -> None:
    eff = g.effective_scale(shape, scale)
    new_shape = g.scaled_shape(shape, scale)
    new_aff = g.scale_affine(aff, eff)
    np.testing.assert_allclose(
        g.fov_corners(new_aff, new_shape),
        g.fov_corners(aff, shape),
        rtol=0,
        atol=max(1e-6 * _voxel_size(new_aff), 1e-9 * 500),
    )


@settings(max_examples=200, deadline=None)
@given(affines(), int_scales)
def test_centre_of_first_output_voxel_is_offset_by_half_voxel(aff: np.ndarray, scale: list[int]) -> None:
    """The classic bug: without the half-voxel term the grid shifts by (s-1)/(2s) voxels."""
    new_aff = g.scale_affine(aff, scale)
    s = np.asarray(scale, dtype=np.float64)
    expected = aff[:3, 3] + aff[:3, :3] @ ((1 / s - 1) / 2)
    np.testing.assert_allclose(new_aff[:3, 3], expected, atol=1e-9)
    # output voxel centre k lies at input index (k + 0.5) / s - 0.5
    k = np.array([3.0, 1.0, 2.0])
    world = new_aff[:3, :3] @ k + new_aff[:3, 3]
    np.testing.assert_allclose(world, aff[:3, :3] @ ((k + 0.5) / s - 0.5) + aff[:3, 3], atol=1e-9)


def test_scale_identity_and_errors() -> None:
    aff = np.diag([0.5, 0.5, 5.0, 1.0])
    np.testing.assert_array_equal(g.scale_affine(aff, 1), aff)
    out = g.scale_affine(aff, (1, 1, 4))
    np.testing.assert_allclose(np.diag(out)[:3], [0.5, 0.5, 1.25])
    assert out[2, 3] == pytest.approx(-1.875)
    with pytest.raises(GeometryError, match="finite and > 0"):
        g.scale_affine(aff, 0)
    with pytest.raises(GeometryError, match="1 or 3 factors"):
        g.scale_affine(aff, (2, 2))
    with pytest.raises(GeometryError):
        g.scaled_shape((4, 4, 4), float("nan"))


@settings(max_examples=200, deadline=None)
@given(
    st.tuples(st.floats(0.1, 1000), st.floats(-5, 5), st.floats(-1e6, 1e6), st.floats(-5, 5), st.floats(-1000, -0.1), st.floats(-1e7, 1e7)),
    st.integers(1, 500),
    st.integers(1, 500),
    st.integers(1, 8),
)
def test_raster_transform_keeps_bounds(t: tuple[float, ...], h: int, w: int, s: int) -> None:
    T = Affine(*t)
    T2 = Affine(*g.scale_transform(t, s))
    np.testing.assert_allclose(tuple(T2), tuple(T @ Affine.scale(1 / s)), rtol=1e-15, atol=0)
    for r, c in [(0, 0), (h, 0), (0, w), (h, w)]:
        np.testing.assert_allclose(T2 @ (c * s, r * s), T @ (c, r), rtol=1e-12, atol=1e-6)


def test_raster_anisotropic_scale_and_crop() -> None:
    t = (10.0, 0.0, 1000.0, 0.0, -20.0, 5000.0)
    assert g.scale_transform(t, (2, 4)) == (2.5, 0.0, 1000.0, 0.0, -10.0, 5000.0)
    assert g.crop_transform(t, 3, 5) == (10.0, 0.0, 1050.0, 0.0, -20.0, 4940.0)


@settings(max_examples=100, deadline=None)
@given(affines(), st.lists(st.integers(-20, 20), min_size=3, max_size=3))
def test_crop_affine_maps_sub_grid(aff: np.ndarray, start: list[int]) -> None:
    sub = g.crop_affine(aff, start)
    np.testing.assert_allclose(sub[:3, 3], aff[:3, :3] @ np.asarray(start, float) + aff[:3, 3], atol=1e-9)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.integers(1, 40), min_size=2, max_size=3),
    st.integers(1, 17),
    st.integers(0, 5),
)
def test_tiles_partition_the_grid(shape: list[int], tile: int, halo: int) -> None:
    count = np.zeros(shape, dtype=np.int32)
    for t in g.iter_tiles(shape, tile, halo):
        count[t.core_slices()] += 1
        for (r0, r1), (c0, c1), n in zip(t.read, t.core, shape):
            assert 0 <= r0 <= c0 < c1 <= r1 <= n
            assert c0 - r0 == min(halo, c0) and r1 - c1 == min(halo, n - c1)
        region = np.arange(np.prod(shape)).reshape(shape)
        np.testing.assert_array_equal(region[t.read_slices()][t.core_in_read()], region[t.core_slices()])
    assert (count == 1).all()


def test_tiles_reject_bad_sizes() -> None:
    with pytest.raises(GeometryError, match="tile size"):
        list(g.iter_tiles((10, 10), 0))
    with pytest.raises(GeometryError, match="halo"):
        list(g.iter_tiles((10, 10), 4, -1))
