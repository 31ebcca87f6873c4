"""The Sentinel-2 NIR cases of benchmarks/degradation_routes.py section 4 (#14): one raster, a real finer band.

A raster upscaled alone has no finer band to check it with; a Sentinel-2
tile has one. Its 20 m group (B05, B06, B07, B8A, B11, B12) goes through
``multiband_x2`` as one raster, x2, and the least-squares blend of the
output's B06, B07 and B8A (weights fitted at the input's resolution against
the box-averaged finer B08) is scored against the real finer B08 (842 nm;
B8A is 865 nm). Neither resolution was made by our code. The Landsat-8 pan
case (landsat_cases.py) is the same protocol on another sensor. Each case
prints the reference's coherence with the blend at the input's resolution
(the box-averaged reference): where it falls towards the Nyquist, the
reference follows the bands' finest detail less and ranks sharper outputs
less well.

* ``s2l1c_b8``: L1C T33UUB (the DSen2 crop, native 10 and 20 m), the
  600 x 600 10 m crop of the other L1C cases;
* ``s2l2a_b8``: L2A 29RKH, the provider's 100 and 200 m overviews, the
  central 1000 x 1000 of the 100 m one. The overviews were resampled by the
  provider, so the 200 m band is close to a box average of the 100 m one:
  a far sharper degradation than the profile's MTF 0.3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import degradation_cases as dc
from landsat_cases import _blend, _blend_fit

NIR = ("B06", "B07", "B8A")


def _case(work: Path, key: str, name: str, b10: dict[str, np.ndarray], b20: dict[str, np.ndarray], res: float,
          crs: str) -> dc.Case:
    ref = b10["B08"]
    h, w = b20["B8A"].shape
    box = ref.reshape(h, 2, w, 2).mean((1, 3))
    coef = _blend_fit(b20, box, NIR)
    coh = dc.coherence_line(_blend(coef, [b20[b] for b in NIR]), box)
    path = work / f"{key}.tif"
    dc._write_tif(path, [b20[b] for b in dc.G20], res, (300000.0, 5800000.0), crs)

    def score(out: Path) -> float:
        got = dc._read_bands(out)
        return dc._psnr2d(_blend(coef, [got[str(dc.G20.index(b))] for b in NIR]), ref)
    return dc.Case(key, name, path, "multiband_x2", score, suffix=".tif", reference=True, cubic={"scale": 2},
                   extra={"blend (B06, B07, B8A, offset)": [round(float(c), 4) for c in coef], dc.COHERENCE: coh})


def s2_nir_cases(work: Path) -> list[dc.Case]:
    """``s2l1c_b8`` and ``s2l2a_b8``: the 20 m group (L1C) or 200 m overview (L2A) x2, against the finer B08."""
    b10, b20 = dc._l1c()
    b10, b20 = {k: v[:600, :600] for k, v in b10.items()}, {k: v[:300, :300] for k, v in b20.items()}
    a10, a20 = dc._l2a(1000)
    return [_case(work, "s2l1c_b8", "S2 L1C T33UUB 20->10 m (ref B08)", b10, b20, 20.0, "EPSG:32633"),
            _case(work, "s2l2a_b8", "S2 L2A 29RKH ovr 200->100 m (ref B08)", a10, a20, 200.0, "EPSG:32629")]
