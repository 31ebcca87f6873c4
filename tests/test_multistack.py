"""Multi-stack reconstruction (issue 16, part 1): forward model, registration, SRR, the route and its CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from medsat_sr.cli import main
from medsat_sr.config import load_config
from medsat_sr.errors import ConfigError, DataError
from medsat_sr.image import make_volume
from medsat_sr.inference.api import upscale
from medsat_sr.io import read, write
from medsat_sr.multistack.forward import make_operator
from medsat_sr.multistack.options import MultiStackOptions
from medsat_sr.multistack.reconstruct import mean_of_cubic, reconstruct, srr
from medsat_sr.multistack.register import register_stack
from medsat_sr.multistack.simulate import motion_error, simulate_stacks
from medsat_sr.multistack.stacks import limit_to_grid, make_stack, output_grid

FAST = {"register_cycles": 1, "registration_iterations": 15, "cg_iterations": 10, "outer_iterations": 2, "margin_mm": 0,
        "max_points": 4000}


def _phantom(n: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured ellipsoid at 1 mm (structure at several scales) and its affine."""
    rng = np.random.default_rng(seed)
    tex = ndimage.gaussian_filter(rng.normal(size=(n, n, n)), 1.2)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    g = (np.mgrid[:n, :n, :n] - (n - 1) / 2) / (n / 2)
    body = ((g[0] / 0.85) ** 2 + (g[1] / 0.75) ** 2 + (g[2] / 0.8) ** 2) < 1
    vol = (body * (200 + 600 * tex)).astype(np.float32)
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    aff[:3, 3] = [-20.0, 5.0, 10.0]
    return vol, aff


@pytest.fixture(scope="module")
def simulated() -> dict:
    vol, aff = _phantom()
    sims = simulate_stacks(vol, aff, thickness=3.0, max_deg=5.0, max_mm=3.0, noise=0.005, seed=3)
    stacks = [make_stack(make_volume(s.data[None], s.affine), name=f"axis{s.slice_axis}", thickness=s.thickness)
              for s in sims]
    return {"vol": vol, "aff": aff, "sims": sims, "stacks": stacks}


@pytest.fixture(scope="module")
def recon(simulated: dict):
    return reconstruct(simulated["stacks"], FAST)


def test_output_grid_intersection_is_where_every_stack_has_data() -> None:
    """``region: intersection``: the box all three orthogonal slabs cover, far smaller than their union."""
    from medsat_sr.errors import GeometryError

    def slab(shape: tuple[int, int, int], spacing: tuple[float, float, float], origin: tuple[float, float, float]):
        aff = np.diag([*spacing, 1.0])
        aff[:3, 3] = origin
        return make_stack(make_volume(torch.ones(1, *shape), aff), name=f"slab{shape}", thickness=4.0)

    axial = slab((40, 40, 6), (1.0, 1.0, 4.0), (0.0, 0.0, 0.0))         # z from -2 to 22 mm
    coronal = slab((40, 6, 40), (1.0, 4.0, 1.0), (0.0, 10.0, -5.0))     # y from 8 to 32 mm
    sagittal = slab((6, 40, 40), (4.0, 1.0, 1.0), (5.0, 0.0, -5.0))     # x from 3 to 27 mm
    stacks = [axial, coronal, sagittal]
    union = output_grid(stacks, spacing=1.0)
    common = output_grid(stacks, spacing=1.0, region="intersection")
    assert common.shape == (24, 24, 24) and np.prod(union.shape) > 3 * np.prod(common.shape), (union.shape, common.shape)
    first = np.asarray(common.affine)[:3, 3]
    last = first + np.asarray(common.affine)[:3, :3] @ (np.asarray(common.shape) - 1)
    assert np.allclose(first, [3.5, 8.5, -1.5]) and np.allclose(last, [26.5, 31.5, 21.5]), (first, last)
    # with a margin, the grid grows by it, and only stack voxels inside the common box take part
    grown = output_grid(stacks, spacing=1.0, region="intersection", margin_mm=4.0)
    assert grown.shape == (32, 32, 32)
    kept = limit_to_grid(axial, grown, 4.0).roi()
    assert kept.sum() == 25 * 25 * 6 and bool(kept[3:28, 8:33, :].all()) and not bool(kept[2, 10, 0]), int(kept.sum())
    assert limit_to_grid(axial, grown, 4.0).mask is None  # not a mask: region auto still reads 'no masks'
    apart = slab((6, 40, 40), (4.0, 1.0, 1.0), (100.0, 0.0, -5.0))
    with pytest.raises(GeometryError, match="do not overlap"):
        output_grid([axial, coronal, apart], spacing=1.0, region="intersection")


def test_forward_operator_adjoint(simulated: dict) -> None:
    """<A x, y> == <x, A^T y> with A^T from autograd: the solver's normal equations are right."""
    st = simulated["stacks"][1]
    grid = output_grid(simulated["stacks"], spacing=1.0)
    op = make_operator(st, grid, motion=simulated["sims"][1].motion)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(grid.shape, generator=g).requires_grad_(True)
    y = torch.rand(op.y.shape, generator=g)
    ax = op.apply(x)
    (aty,) = torch.autograd.grad((ax * y).sum(), x)
    lhs, rhs = float((ax.detach().double() * y.double()).sum()), float((x.detach().double() * aty.double()).sum())
    assert abs(lhs - rhs) <= 1e-4 * abs(lhs)
    # a constant volume is reproduced inside the grid (the slice profile weights sum to 1)
    op.cache()
    assert torch.allclose(op.matvec(x.detach()), ax.detach(), atol=1e-5)  # the solver's sparse matrix is the same operator
    assert torch.allclose(op.rmatvec(y), aty, atol=1e-4)
    ones = op.apply(torch.ones(grid.shape))[op.inside]
    assert torch.allclose(ones, torch.ones_like(ones), atol=1e-5)


def test_a_stack_too_large_for_a_sparse_operator_runs_matrix_free_with_the_same_products(
    simulated: dict, recon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unmasked whole stacks (a 320 x 320 x 22 fetal stack needs ~15 GB as a sparse matrix) run matrix-free."""
    from medsat_sr.multistack import forward

    st = simulated["stacks"][0]
    grid = output_grid(simulated["stacks"], spacing=1.0)
    sparse = make_operator(st, grid, motion=simulated["sims"][0].motion)
    sparse.cache()
    monkeypatch.setattr(forward, "SPARSE_MAX_BYTES", sparse.sparse_bytes() - 1)
    free = make_operator(st, grid, motion=simulated["sims"][0].motion)
    free.cache()
    assert free.matrix_free and not sparse.matrix_free and free._matrix is None
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(grid.shape, generator=g), torch.rand(sparse.y.shape, generator=g)
    assert torch.allclose(free.matvec(x), sparse.matvec(x), atol=1e-5)
    assert torch.allclose(free.rmatvec(y), sparse.rmatvec(y), atol=1e-4)
    # the whole reconstruction: the same volume within float rounding
    monkeypatch.setattr(forward, "SPARSE_MAX_BYTES", 0)
    again = reconstruct(simulated["stacks"], FAST)
    assert all(op.matrix_free for op in again.ops)
    rel = float((again.volume - recon.volume).norm() / recon.volume.norm())
    assert rel < 2e-3, rel  # rounding differences, amplified a little by the registration cycles


def test_registration_recovers_known_motion(simulated: dict, recon) -> None:
    vol, aff, sims = simulated["vol"], simulated["aff"], simulated["sims"]
    pts = np.argwhere(vol > 0)[::20] @ aff[:3, :3].T + aff[:3, 3]
    for k in (1, 2):
        before = motion_error(np.eye(4), sims[k].motion, np.eye(4), sims[0].motion, pts)
        after = motion_error(recon.ops[k].motion.numpy(), sims[k].motion, recon.ops[0].motion.numpy(), sims[0].motion, pts)
        assert before > 1.5, before
        assert after < 0.5 * before and after < 0.8, (k, before, after)


def test_registration_is_not_pulled_by_the_grid_border() -> None:
    """Started at the true motion, every stack stays there against a reconstruction made with the true motions.

    The anatomy fills the whole volume (as in a crop of a head), so the stacks' edges and the reconstruction's
    rim disagree; with them in the fit the stacks drifted by 0.07-0.18 mm here (0.4-0.9 mm on a T1 crop).
    Registration leaves out the stack voxels next to the grid's border.
    """
    rng = np.random.default_rng(0)
    tex = ndimage.gaussian_filter(rng.normal(size=(32, 32, 32)), 1.2)
    vol = (200 + 600 * (tex - tex.min()) / (tex.max() - tex.min())).astype(np.float32)
    aff = np.eye(4)
    sims = simulate_stacks(vol, aff, thickness=3.0, max_deg=5.0, max_mm=3.0, noise=0.005, seed=3)
    stacks = [make_stack(make_volume(s.data[None], s.affine), thickness=s.thickness) for s in sims]
    grid = output_grid(stacks, spacing=1.0)
    ops = [make_operator(s, grid, motion=sim.motion) for s, sim in zip(stacks, sims)]
    v, _ = srr(ops, mean_of_cubic(ops, grid), 0, MultiStackOptions(cg_iterations=10, outer_iterations=2), robust=False)
    centre = grid.affine[:3, :3] @ ((np.asarray(grid.shape) - 1) / 2) + grid.affine[:3, 3]
    pts = np.argwhere(vol > 0)[::20] @ aff[:3, :3].T + aff[:3, 3]
    for k, op in enumerate(ops):
        m, _ = register_stack(op, v, centre=centre, radius=16.0, iterations=15, max_points=4000)
        err = motion_error(m.numpy(), sims[k].motion, np.eye(4), np.eye(4), pts)
        assert err < 0.06, (k, err)


def _errors_against_truth(simulated: dict, rec) -> tuple[float, float]:
    """RMS error against the phantom on the reconstruction's grid: the reconstruction's and the mean of cubic stacks'."""
    from medsat_sr.baselines import resample_affine

    vol, aff = simulated["vol"], simulated["aff"]
    truth = resample_affine(vol, np.linalg.inv(aff) @ rec.grid.affine, rec.grid.shape, order=1)
    m = np.isfinite(truth) & (truth > 0)
    norm = simulated["stacks"][0].norm

    def err(x: torch.Tensor) -> float:
        return float(np.sqrt(np.mean((x.numpy()[m] * norm - truth[m]) ** 2)))

    return err(rec.volume), err(mean_of_cubic(rec.ops, rec.grid, rec.scales))


def test_srr_beats_mean_of_cubic_against_truth(simulated: dict, recon) -> None:
    srr_err, base_err = _errors_against_truth(simulated, recon)
    assert srr_err < 0.85 * base_err, (srr_err, base_err)


def test_srr_on_the_common_box_beats_mean_of_cubic_there(simulated: dict) -> None:
    """``region: intersection``: a grid no larger than the union's, stack voxels limited to it, better than the baseline."""
    common = reconstruct(simulated["stacks"], {**FAST, "region": "intersection", "margin_mm": 4.0})
    union = output_grid(simulated["stacks"], spacing=1.0, margin_mm=4.0)
    assert np.prod(common.grid.shape) < np.prod(union.shape)
    assert all(op.stack.within is not None and len(op.y) == int(op.stack.roi().sum()) for op in common.ops)
    srr_err, base_err = _errors_against_truth(simulated, common)
    assert srr_err < 0.85 * base_err, (srr_err, base_err)


def test_nan_voxels_of_a_stack_take_no_part(simulated: dict) -> None:
    """A stack with NaN (no data) over half its field of view: the NaN were read as 0 and averaged in, which
    darkened the mean of the stacks there; now they are left out of the mean and of the operator's data term."""
    from medsat_sr.baselines import resample_affine

    sims = simulated["sims"]
    holed = sims[0].data.copy()
    holed[: holed.shape[0] // 2] = np.nan
    stacks = [make_stack(make_volume(holed[None], sims[0].affine), name="holed", thickness=sims[0].thickness)]
    stacks += [make_stack(make_volume(s.data[None], s.affine), thickness=s.thickness) for s in sims[1:]]
    whole = simulated["stacks"]
    assert stacks[0].norm == pytest.approx(whole[0].norm, rel=0.05)  # the scale comes from the finite voxels
    assert stacks[0].valid is not None and int((~stacks[0].valid).sum()) == int(np.isnan(holed).sum())
    grid = output_grid(whole, spacing=1.0)
    ops = [make_operator(st, grid, motion=sim.motion) for st, sim in zip(stacks, sims)]
    assert len(ops[0].y) == int(stacks[0].valid.sum()) and torch.isfinite(ops[0].y).all()
    ref = mean_of_cubic([make_operator(st, grid, motion=sim.motion) for st, sim in zip(whole, sims)], grid).numpy()
    got = mean_of_cubic(ops, grid).numpy()
    to_stack0 = np.linalg.inv(sims[0].affine) @ np.linalg.inv(np.asarray(sims[0].motion, dtype=np.float64)) @ grid.affine
    hole = resample_affine(np.isnan(holed).astype(np.float32), to_stack0, grid.shape, order=1, outside=0.0) > 0.99
    bright = hole & (ref > 0.5 * float(ref.max()))
    assert bright.sum() > 500
    # where stack 0 has no data the others still see the phantom: the level stays (a 0 fill gave about 2/3 of it)
    assert 0.9 < float(np.median(got[bright] / ref[bright])) < 1.1


def _write_stacks(tmp: Path, simulated: dict) -> list[Path]:
    paths = []
    for k, s in enumerate(simulated["sims"]):
        p = tmp / f"stack{k}.nii.gz"
        write(make_volume(s.data[None], s.affine, source_dtype="float32"), p)
        paths.append(p)
    return paths


@pytest.mark.slow  # a full reconstruction with its leave-one-out check, then the cubic route (~30 s)
def test_cli_route_end_to_end(tmp_path: Path, simulated: dict, monkeypatch: pytest.MonkeyPatch,
                              caplog: pytest.LogCaptureFixture) -> None:
    from medsat_sr.inference import route_multistack
    from medsat_sr.progress import Progress

    bars: list[Progress] = []

    class Counted(Progress):
        def __init__(self, *a: object, **k: object) -> None:
            super().__init__(*a, **k)
            bars.append(self)

    monkeypatch.setattr(route_multistack, "Progress", Counted)
    monkeypatch.setattr(route_multistack, "LARGE_GRID_VOXELS", 1000)  # these unmasked stacks count as large
    paths = _write_stacks(tmp_path, simulated)
    out = tmp_path / "fused.nii.gz"
    sets = [f"--set=multistack.{k}={v}" for k, v in FAST.items()]
    rc = main(["upscale", *map(str, paths), "-o", str(out), "--config", "mri_multistack", *sets])
    assert rc == 0
    # progress counts every registration, outer iteration and held-out stack, and ends at its total
    assert len(bars) == 1 and bars[0].done == bars[0].total == 2 * 2 + 2 * 2 + 3
    assert any("3 stacks without masks" in r.getMessage() and "multistack.masks" in r.getMessage()
               and "multistack.region=intersection" in r.getMessage() for r in caplog.records)
    img = read(out)
    rec = json.loads(out.with_name("fused.nii.gz.json").read_text()) if out.with_name("fused.nii.gz.json").exists() \
        else json.loads(next(tmp_path.glob("fused*.json")).read_text())
    # geometry contract: isotropic at the finest in-plane spacing, covering every stack's field of view
    sp = np.sqrt((np.asarray(img.affine)[:3, :3] ** 2).sum(axis=0))
    assert np.allclose(sp, 1.0, atol=1e-4)
    vol, aff = simulated["vol"], simulated["aff"]
    lo = aff[:3, 3] - 0.5
    hi = aff[:3, :3] @ (np.asarray(vol.shape) - 0.5) + aff[:3, 3]
    a = np.asarray(img.affine)
    out_lo = a[:3, 3] - 0.5
    out_hi = a[:3, :3] @ (np.asarray(img.shape[1:]) - 0.5) + a[:3, 3]
    assert np.all(out_lo <= lo + 1.0) and np.all(out_hi >= hi - 1.0)
    assert rec["input"]["route"] == "multistack" and len(rec["input"]["inputs"]) == 3
    assert rec["validation"]["n"] == 3 and "decision" in rec
    # --method cubic: mean of the cubic-resampled registered stacks on the same grid
    out2 = tmp_path / "mean.nii.gz"
    assert main(["upscale", *map(str, paths), "-o", str(out2), "--method", "cubic"]) == 0
    mean = read(out2)
    assert np.allclose(np.sqrt((np.asarray(mean.affine)[:3, :3] ** 2).sum(axis=0)), 1.0, atol=1e-4)
    assert all(a >= b for a, b in zip(mean.shape[1:], img.shape[1:]))  # default margin: 8 mm around the union


@pytest.mark.slow  # registers three stacks, writes and re-reads a DICOM series (~20 s)
def test_dicom_output_reread(tmp_path: Path, simulated: dict) -> None:
    paths = _write_stacks(tmp_path, simulated)
    out = tmp_path / "fused_dicom"
    res = upscale([str(p) for p in paths], output=str(out), method="cubic", format="dicom")
    back = read(out)
    assert tuple(back.shape) == tuple(res.image.shape)
    assert np.allclose(np.asarray(back.affine), np.asarray(res.image.affine), atol=1e-3)
    if shutil.which("dcm2niix") is None:
        pytest.skip("dcm2niix is not installed: the DICOM series was re-read by medsat_sr only")
    conv = tmp_path / "conv"
    conv.mkdir()
    subprocess.run(["dcm2niix", "-z", "y", "-f", "x", "-o", str(conv), str(out)], check=True, capture_output=True)
    nii = read(next(conv.glob("x*.nii.gz")))
    assert tuple(nii.shape) == tuple(res.image.shape)
    assert np.allclose(_corners(nii), _corners(res.image), atol=1e-2)  # same field of view (dcm2niix may flip rows)


def _corners(img) -> np.ndarray:
    a = np.asarray(img.affine, dtype=np.float64)
    n = np.asarray(img.shape[1:]) - 1
    c = np.array(np.meshgrid(*[[0, v] for v in n], indexing="ij")).reshape(3, -1).T
    w = c @ a[:3, :3].T + a[:3, 3]
    return w[np.lexsort(w.T[::-1])]


def test_errors_name_the_file(tmp_path: Path, simulated: dict) -> None:
    paths = _write_stacks(tmp_path, simulated)
    with pytest.raises(ConfigError, match="stack0.nii.gz: multi-stack reconstruction needs at least two stacks"):
        upscale(str(paths[0]), output=str(tmp_path / "o.nii.gz"), config="mri_multistack")
    missing = tmp_path / "nope.nii.gz"
    with pytest.raises((DataError, OSError), match="nope.nii.gz"):
        upscale([str(paths[0]), str(missing)], output=str(tmp_path / "o.nii.gz"), method="cubic")
    far = tmp_path / "far.nii.gz"
    s = simulated["sims"][1]
    moved = s.affine.copy()
    moved[:3, 3] += 500.0
    write(make_volume(s.data[None], moved, source_dtype="float32"), far)
    with pytest.raises(DataError, match="far.nii.gz"):
        upscale([str(paths[0]), str(far)], output=str(tmp_path / "o.nii.gz"), method="cubic")
    cfg = load_config("mri_multistack", [f"multistack.masks=[{paths[0]}]"])
    assert cfg.multistack is not None and cfg.multistack.masks == [str(paths[0])]
    with pytest.raises(ConfigError, match="one per stack"):
        upscale([str(p) for p in paths], output=str(tmp_path / "o.nii.gz"), config="mri_multistack",
                overrides=[f"multistack.masks=[{paths[0]}]"])
