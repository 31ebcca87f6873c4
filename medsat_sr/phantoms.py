"""Synthetic volumes with known statistics, for validating estimators against an exact truth.

A real 1 mm scan is never isotropic (a zero-filled phase-encoding axis, a
blurrier readout axis), so a slice profile simulated on it is not exactly the
profile *relative to the in-plane axes* that :mod:`medsat_sr.estimate`
recovers. An isotropic random field has equally sharp axes by construction.
"""

from __future__ import annotations

import numpy as np


def power_law_field(n: int = 160, alpha: float = 3.0, seed: int = 0) -> np.ndarray:
    """An isotropic Gaussian random field of ``n**3`` voxels with power spectrum ``|k|**-alpha``.

    Args:
        n: voxels per axis.
        alpha: spectral exponent (3 is close to natural images and anatomy; larger is smoother).
        seed: random seed.

    Returns:
        ``float32 (n, n, n)``, unit standard deviation around 10 (positive everywhere,
        so every voxel counts as foreground).
    """
    k = np.sqrt(sum(g ** 2 for g in np.meshgrid(*[np.fft.fftfreq(n)] * 3, indexing="ij", sparse=True)))
    k[0, 0, 0] = 1.0
    spec = np.fft.fftn(np.random.default_rng(seed).standard_normal((n, n, n))) * k ** (-alpha / 2)
    spec[0, 0, 0] = 0.0
    x = np.real(np.fft.ifftn(spec))
    return (10.0 + x / x.std()).astype(np.float32)
