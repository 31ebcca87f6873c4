"""Shared test helpers: the dcm2niix oracle, voxel-grid comparisons and the CLI run in-process.

Import from a test module with::

    sys.path.insert(0, str(Path(__file__).resolve().parents[N]))  # the tests/ folder
    from helpers import run_dcm2niix, grid_correspondence
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

__all__ = ["run_cli", "run_dcm2niix", "dcm2niix_log", "corner_error", "grid_correspondence", "resample_reference"]


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``medsat-sr ARGV`` in this process: its exit code, stdout and stderr."""
    from medsat_sr.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def run_dcm2niix(src: Path, outdir: Path, *extra: str) -> list[Path]:
    """Convert ``src`` (a DICOM folder) with ``dcm2niix -z y -f out -o outdir [extra...]``.

    The tool's output is kept in ``outdir / "dcm2niix.log"`` (see :func:`dcm2niix_log`).
    Skips the test when dcm2niix is not installed (``pip install dcm2niix``).

    Returns:
        The ``.nii.gz`` files written, sorted by name.
    """
    exe = shutil.which("dcm2niix")
    if exe is None:
        pytest.skip("dcm2niix not on PATH (pip install dcm2niix)")
    outdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [exe, "-z", "y", "-f", "out", "-o", str(outdir), *extra, str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    (outdir / "dcm2niix.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise AssertionError(f"dcm2niix failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return sorted(outdir.glob("*.nii.gz"))


def dcm2niix_log(outdir: Path) -> str:
    """What dcm2niix printed for the conversion into ``outdir``."""
    return (outdir / "dcm2niix.log").read_text()


def _corners(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    grid = np.array(np.meshgrid(*[[0, int(k) - 1] for k in shape[:3]], indexing="ij")).reshape(3, -1)
    return (affine[:3, :3] @ grid + affine[:3, 3:4]).T


def corner_error(a_affine: np.ndarray, a_shape: Sequence[int], b_affine: np.ndarray, b_shape: Sequence[int]) -> float:
    """Largest distance (mm) from a corner voxel centre of grid A to the nearest corner of grid B.

    Independent of axis order and flips, like comparing two converters' outputs.
    """
    ca = _corners(np.asarray(a_affine, dtype=np.float64), a_shape)
    cb = _corners(np.asarray(b_affine, dtype=np.float64), b_shape)
    return float(np.linalg.norm(ca[:, None, :] - cb[None, :, :], axis=-1).min(axis=1).max())


def grid_correspondence(
    a_affine: np.ndarray, b_affine: np.ndarray, *, tol: float = 1e-3
) -> tuple[np.ndarray, np.ndarray]:
    """Integer map from voxel indices of grid A to grid B: ``b = R @ a + t``.

    ``inv(B) @ A`` must be a signed permutation plus an integer shift (to
    ``tol`` voxels); otherwise the grids do not share voxel centres and an
    AssertionError says by how much.
    """
    m = np.linalg.inv(np.asarray(b_affine, dtype=np.float64)) @ np.asarray(a_affine, dtype=np.float64)
    r, t = np.rint(m[:3, :3]), np.rint(m[:3, 3])
    err = max(float(np.abs(m[:3, :3] - r).max()), float(np.abs(m[:3, 3] - t).max()))
    assert err <= tol, f"grids do not share voxel centres: inv(B) @ A is {err:.2e} voxels from integral\n{m}"
    assert sorted(np.abs(r).sum(axis=0).tolist()) == [1.0, 1.0, 1.0] and abs(abs(np.linalg.det(r)) - 1) < 1e-9, (
        f"not a permutation/flip:\n{r}"
    )
    return r.astype(int), t.astype(int)


def resample_reference(ref: np.ndarray, a_shape: Sequence[int], r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``ref`` (3D, or 4D with volumes last) read at grid A's voxels through ``b = r @ a + t``.

    Returns an array shaped ``a_shape`` (plus the volume axis last for 4D).
    """
    idx = np.indices(tuple(a_shape)).reshape(3, -1)
    b = r @ idx + t[:, None]
    shape_b = np.asarray(ref.shape[:3])[:, None]
    assert np.all((b >= 0) & (b < shape_b)), "grid A reaches outside the reference grid"
    out = ref[tuple(b)]
    return out.reshape(tuple(a_shape) + ref.shape[3:])
