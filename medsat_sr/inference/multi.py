"""Multi-input routes: several images of one object fused into one output.

Two routes take more than one input: several thick-slice stacks of one
anatomy into one isotropic volume (``multistack``), and revisits of one scene
into one sharper raster (``revisit``). Each lives in its own module
(``route_multistack``, ``route_revisit``) and is a :data:`RouteFn`: it reads
its inputs, runs its method, writes the output (atomically, with the io
writers) and returns a :class:`MultiResult`. :func:`medsat_sr.inference.upscale`
builds the trust record and its sidecar from that result with the same code
as the single-image routes, so every route has one kind of record.

A config chooses its route by having the route's own section
(``multistack:`` or ``revisit:``); a classical method without a config takes
the route of the input kind (volumes: ``multistack``, rasters: ``revisit``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai.data import MetaTensor

from medsat_sr.config import JobConfig
from medsat_sr.errors import ConfigError
from medsat_sr.inference.options import UpscaleOptions
from medsat_sr.inference.plan import Decision
from medsat_sr.inference.record import TrustRecord, remove_output
from medsat_sr.io import detect_format
from medsat_sr.revisit.fuse import METHODS as _FUSIONS
from medsat_sr.trust import write_record

__all__ = ["MultiRequest", "MultiResult", "RouteFn", "MULTI_ROUTES", "route_for", "run_multi"]


@dataclass
class MultiRequest:
    """What a multi-input route is asked to do (validated by :func:`medsat_sr.inference.upscale`).

    Attributes:
        inputs: the input paths, in the order given (files or folders).
        cfg: the job config, if any (its route section holds the route's options).
        method: a classical method instead of the route's default method.
        opts: the validated upscale options (device, precision, dtype, format, force, ...).
        out_path: where to write, or ``None`` to return the image only.
        fmt: the output format resolved from ``out_path`` (``nifti``, ``dicom``, ``geotiff``, ``cog``).
        scale: the requested scale, if any.
        target_spacing: volumes: the requested output spacing in mm, if any.
        read_options: reader options (DICOM ``series``, ...).
        run_dir: where a fit keeps its run, if asked.
        progress: show progress bars.
        series_description: DICOM output SeriesDescription.
    """

    inputs: list[Path]
    cfg: JobConfig | None
    method: str | None
    opts: UpscaleOptions
    out_path: Path | None = None
    fmt: str | None = None
    scale: float | Sequence[float] | None = None
    target_spacing: float | Sequence[float] | None = None
    read_options: Mapping[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None
    progress: bool = False
    series_description: str | None = None


@dataclass
class MultiResult:
    """What a multi-input route returns (the trust record is built from it).

    Attributes:
        image: the fused image in memory, when kept.
        inputs: one record entry per input (path, sha256, kind, shape, grid).
        output: shape and grid of what was written.
        method: what produced the written output.
        decision: the learned-or-classical decision, with its scores.
        run_info: the route's settings and what it derived (registration, frames, dates, ...).
        models: one entry per network used.
        validation: held-out scores (leave-one-stack-out, simulated revisits, ...).
        consistency: the output checked against the inputs.
        timings: seconds per stage.
    """

    image: MetaTensor | None
    inputs: list[dict[str, Any]]
    output: dict[str, Any]
    method: str
    decision: Decision
    run_info: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    validation: dict[str, Any] | None = None
    consistency: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


RouteFn = Callable[[MultiRequest], MultiResult]

#: The multi-input routes, by name (a config's section of the same name selects one).
MULTI_ROUTES: dict[str, RouteFn] = {}

_VOLUME_FORMATS = ("nifti", "dicom")


def is_fusion_method(method: str | None) -> bool:
    """A classical method that only the revisit route has (``median``, ``mean``, ``shift-and-add``, ``best-frame``).

    With such a method one input is a folder of dates, as with a revisit config.
    """
    m = (method or "").lower().replace("-", "_")
    return m == "saa" or (m in _FUSIONS and m != "learned")


def route_for(cfg: JobConfig | None, method: str | None, inputs: Sequence[Path]) -> str:
    """The route of a multi-input run: the config's route section, else the input kind's route.

    Raises:
        ConfigError: fewer than two inputs, a config without a multi-input
            section, or a route this installation does not have.
    """
    sections = cfg is not None and any(getattr(cfg, n, None) is not None for n in ("multistack", "revisit"))
    if len(inputs) < 2 and not sections and not is_fusion_method(method):  # one input: a folder of dates or of stacks
        raise ConfigError(f"a multi-input route needs at least two inputs, got {len(inputs)}")
    if cfg is not None:
        names = [name for name in ("multistack", "revisit") if getattr(cfg, name, None) is not None]
        if not names:
            raise ConfigError(
                f"{cfg.source}: {len(inputs)} inputs need a multi-input config (one with a multistack: or revisit: "
                "section, e.g. mri_multistack or revisit_x3); give one input for a single-image config"
            )
        name = names[0]
    elif is_fusion_method(method):
        name = "revisit"
    elif method is not None:
        name = "multistack" if detect_format(Path(inputs[0])) in _VOLUME_FORMATS else "revisit"
    else:
        raise ConfigError(f"{len(inputs)} inputs: give a multi-input config (--config) or a classical method (--method)")
    if name not in MULTI_ROUTES:
        raise ConfigError(f"the {name} route is not available in this installation (routes: {sorted(MULTI_ROUTES)})")
    return name


def run_multi(req: MultiRequest) -> tuple[MultiResult, dict[str, Any], Path | None]:
    """Run the route of ``req`` and write its trust record next to the output.

    Returns:
        The route's result, the record (as written) and the sidecar path (``None`` without output).

    Raises:
        ConfigError: see :func:`route_for`; anything the route raises. An
            output whose record cannot be written is removed.
    """
    t_start = time.perf_counter()
    name = route_for(req.cfg, req.method, req.inputs)
    res = MULTI_ROUTES[name](req)
    res.timings.setdefault("total", time.perf_counter() - t_start)
    opts = req.opts
    record = TrustRecord(
        input={"kind": "multi", "route": name, "inputs": res.inputs},
        output={"path": str(req.out_path) if req.out_path else None, "format": req.fmt, "dtype": opts.dtype, **res.output},
        method=res.method, models=res.models,
        settings={"route": name, "device": opts.device, "precision": opts.precision, **res.run_info},
        decision=res.decision.to_dict(), validation=res.validation, consistency=res.consistency, timings=res.timings,
        config=req.cfg.resolved() if req.cfg is not None else None,
        config_source=req.cfg.source if req.cfg is not None else None,
    ).to_dict()
    side = None
    if req.out_path is not None and opts.sidecar:
        try:
            side = write_record(record, req.out_path)
        except BaseException:
            remove_output(req.out_path)  # an output without its record is incomplete
            raise
    return res, record, side


# The routes register themselves in MULTI_ROUTES (imported last: each imports this module's types).
from medsat_sr.inference import route_revisit  # noqa: E402,F401  ("revisit")
from medsat_sr.inference import route_multistack  # noqa: E402,F401  ("multistack")
