"""``upscale --model NAME`` (no fitting): wall time on a 256^3-class volume and a 2000^2 4-band scene (#15).

The "verdict line" is the ``verdict:`` line the CLI printed on stdout.

* ``mri_thick_slice`` (any factor) and ``mri_thick_slice_x4`` (the config's
  x4 network, what a fine-tune starts from at x4) on the held-out UIH T1 at
  1 mm (160 x 230 x 256) made 4 mm thick across its superior axis (``mri``
  slice model): 160 x 230 x 64 in, 160 x 230 x 256 out (9.4 M voxels);
* ``mri_isotropic_x2`` on a 128^3 block of the same T1 degraded by PSF x2: 64^3 in, 128^3 out;
* ``multiband_x2`` on a 1000 x 1000 4-band scene (NAIP, mirror-tiled: real
  content, timing only): 2000 x 2000 out.

Each through the CLI in a fresh process (imports included), median of
``--runs``; the verdict line and the decision (model vs cubic on the input's
held-out split) are read from the trust record. Writes
``benchmarks/results/model_speed.txt``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "zoo"))

import numpy as np  # noqa: E402

import _machine  # noqa: E402
import datasets as ds  # noqa: E402

RESULTS = HERE / "results"


def inputs(work: Path) -> dict[str, tuple[Path, list[int]]]:
    """Write the inputs; ``{model name: (path, spatial shape)}``."""
    from medsat_sr.config import load_config
    from medsat_sr.evaluate import prepare_case
    from medsat_sr.image import make_raster
    from medsat_sr.io import write

    uih = ds.uih_1mm()
    thick = prepare_case(uih, load_config("mri_thick_slice"), name="uih").lr
    iso = prepare_case(ds.crop(uih, [16, 51, 64], [144, 179, 192]), load_config("mri_isotropic_x2"), name="b").lr
    left, _ = ds.naip_halves()
    a = left.as_tensor().numpy()[:, :500, :466]
    tile = np.concatenate([a, a[:, :, ::-1]], axis=2)
    tile = np.concatenate([tile, tile[:, ::-1]], axis=1)  # 1000 x 932
    scene = np.pad(tile, ((0, 0), (0, 0), (0, 1000 - tile.shape[2])), mode="reflect")
    ras = make_raster(scene.astype(np.float32), left.meta["transform"], crs=left.meta["crs"], source_dtype="uint8")
    thick_path = Path(write(thick, work / "uih_4mm.nii.gz"))
    return {"mri_thick_slice": (thick_path, list(thick.shape[1:])),
            "mri_thick_slice_x4": (thick_path, list(thick.shape[1:])),
            "mri_isotropic_x2": (Path(write(iso, work / "uih_block_2mm.nii.gz")), list(iso.shape[1:])),
            "multiband_x2": (Path(write(ras, work / "naip_1000.tif")), list(ras.shape[1:]))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--work", type=Path, default=Path("/tmp/model_speed"))
    p.add_argument("--out", type=Path, default=RESULTS / "model_speed.txt",
                   help="results file (default results/model_speed.txt; name another machine's run apart)")
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    lines = [f"upscale --model NAME (no fitting), fresh process each run, median of {a.runs}; "
             f"machine: {_machine.describe()}, load average at start {_machine.load_average()}", "",
             f"{'model':20s} {'input':>16s} {'output':>16s} {'wall s':>7s}  verdict"]
    for name, (src, shape_in) in inputs(a.work).items():
        out = a.work / ("out" + "".join(src.suffixes))
        times = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "medsat_sr", "upscale", str(src), "--model", name, "-o", str(out)],
                               capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if r.returncode != 0:
                print(r.stderr, file=sys.stderr)
                return 1
            verdict = [ln for ln in r.stdout.splitlines() if ln.startswith("verdict:")][-1:]
            out.unlink(missing_ok=True)
            rec = json.loads(out.with_name(out.name + ".json").read_text())
            out.with_name(out.name + ".json").unlink()
        d = rec.get("decision") or {}
        lines.append(f"{name:20s} {str(shape_in):>16s} {str(rec['output']['shape'][1:]):>16s} "
                     f"{statistics.median(times):7.1f}  model {d.get('model_score', float('nan')):.2f} dB vs "
                     f"{d.get('classical_method')} {d.get('classical_score', float('nan')):.2f} dB on the input's "
                     f"held-out split -> {'model' if d.get('use_model') else 'cubic'}")
        lines.append(f"{'':20s} verdict line: {verdict[0] if verdict else '-'}")
    text = "\n".join(lines)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
