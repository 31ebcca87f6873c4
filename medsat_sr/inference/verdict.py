"""The plain verdict line that ends every ``upscale``, ``batch`` item and ``demo`` case (issue #13).

One line says what was written, with which method, how it scored on
held-out pixels against the classical result, whether the run fell back,
and where its trust record is::

    verdict: out.tif: model, +2.25 dB vs GDAL cubic on held-out pixels (31.42 vs 29.17 dB); no fallback; record out.tif.json

A run whose held-out comparison could not check something (e.g. a single
raster's PSF, which nothing measures) adds ``caution: ...`` before the record.

Standard library only: :func:`verdict_line` takes plain values and
:func:`record_verdict` reads them from a trust record (the dict of
:meth:`~medsat_sr.inference.record.TrustRecord.to_dict`, or its JSON sidecar).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["verdict_line", "record_verdict", "PREFIX"]

#: What every verdict line starts with (easy to grep in a batch log).
PREFIX = "verdict:"

#: Where a decision's scores come from (its ``source``), when not from the input's own held-out pixels.
SCORED_ON = {"checkpoint metrics": "its training's held-out data, not this input's"}


def _score(value: Any) -> float | None:
    """A finite float, or ``None``."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def verdict_line(
    output: str | os.PathLike[str] | None,
    *,
    method: str,
    model_score: float | None = None,
    classical_score: float | None = None,
    classical_method: str | None = None,
    fell_back: bool = False,
    forced: bool = False,
    record: str | os.PathLike[str] | None = None,
    classical: bool | None = None,
    unit: str = "dB",
    caution: str | None = None,
    interp_score: float | None = None,
    margin_db: float | None = None,
    scored_on: str = "held-out pixels",
) -> str:
    """The verdict of one written product, in one line.

    Args:
        output: what was written (``None``: nothing, e.g. a dry run).
        method: what produced the network's result (``"model"``, ``"ensemble of 3 models"``)
            or the classical method asked for (``"cubic"``).
        model_score: the network's held-out score (PSNR in dB unless ``unit`` says otherwise).
        classical_score: the classical result's score on the same pixels.
        classical_method: what a fallback writes (``"GDAL cubic"``, ``"cubic B-spline"``).
        fell_back: a network was available but the classical result was written.
        forced: the network was kept although it did not pass.
        record: the trust record's path (``None``: none written).
        classical: a classical method was asked for (default: ``method`` is a resampling method).
        unit: ``"dB"`` (a difference is printed), ``"ratio"`` (model / classical) or
            ``"ERGAS"`` (both printed; lower is better).
        caution: what the held-out comparison could not check (printed as
            ``caution: ...`` before the record), e.g. an unmeasured degradation.
        interp_score: the network's own untrained interpolation path on the
            same pixels (dB); a fallback's line names it when the network beat
            the classical result but not this path.
        margin_db: the least gain (dB) the network needed (``min_gain_db``);
            a fallback's line names it.
        scored_on: where the scores were measured: the input's held-out pixels,
            or (a checkpoint applied as it is) the held-out data of its training.

    Returns:
        ``"verdict: <output>: <what>; <fallback>[; caution: <caution>]; record <path>"``.
    """
    base = classical_method or "cubic"
    m, c = _score(model_score), _score(classical_score)
    if m is not None and c is not None:
        if unit == "ERGAS":
            versus = f"ERGAS {m:.3f} vs {c:.3f} for {base} on {scored_on} (lower is better)"
        elif unit == "ratio":
            versus = f"{m / c:.2f}x {base} on {scored_on} ({m:.3g} vs {c:.3g})" if c else f"{m:.3g} vs {base} {c:.3g}"
        else:
            versus = f"{m - c:+.2f} dB vs {base} on {scored_on} ({m:.2f} vs {c:.2f} dB)"
    else:
        versus = None
    if classical is None:
        classical = method in {"cubic", "linear", "nearest", "lanczos"}
    learned = not classical or m is not None
    i = _score(interp_score)
    if versus and i is not None and m is not None and unit == "dB" and c is not None and m > c:
        versus += f", but {m - i:+.2f} dB vs its own untrained interpolation path ({i:.2f} dB)"
    if fell_back:
        margin = _score(margin_db)
        need = f"; it must win by {margin:g} dB" if unit == "dB" and margin else ""  # a zero margin says nothing
        what = (f"{base} (fell back: the {method} scored {versus}{need})" if versus
                else f"{base} (fell back from the {method})")
        fallback = "fell back"
    elif not learned:
        what = f"{method} (a classical method was asked for; no held-out comparison)"
        fallback = "no model"
    else:
        what = f"{method}, {versus}" if versus else f"{method} (no held-out score recorded; applied as it is)"
        fallback = "kept by --force although it did not pass" if forced else "no fallback"
    where = str(output) if output is not None else "nothing written"
    rec = f"record {record}" if record is not None else "no trust record"
    warn = f"; caution: {caution}" if caution else ""
    return f"{PREFIX} {where}: {what}; {fallback}{warn}; {rec}"


def record_verdict(
    record: Mapping[str, Any],
    output: str | os.PathLike[str] | None = None,
    sidecar: str | os.PathLike[str] | None = None,
) -> str:
    """The verdict line of a trust record (the sidecar's content).

    Args:
        record: the record (``method``, ``decision``, ``output.path``).
        output: the written product (default: the record's ``output.path``).
        sidecar: the record's own path, when written.

    Returns:
        The line of :func:`verdict_line`.
    """
    d = record.get("decision")
    d = d if isinstance(d, Mapping) else {}
    fb = record.get("fallback")
    fb = fb if isinstance(fb, Mapping) else {}
    out_info = record.get("output")
    if output is None:  # a record's output: {"path": ...}, or the path itself (pan-sharpening)
        output = out_info.get("path") if isinstance(out_info, Mapping) else out_info if isinstance(out_info, str) else None
    ergas = d.get("metric") == "ERGAS"
    fell_back = bool(d.get("fell_back", fb.get("applied", False)))
    # the record's method is what was written; a fallback's verdict names what lost (the model)
    method = ("network" if ergas else "model") if fell_back else str(record.get("method") or "model")
    return verdict_line(
        output,
        method=method,
        model_score=d.get("model_score"),
        classical_score=d.get("classical_score"),
        classical_method=d.get("classical_method"),
        fell_back=fell_back,
        unit="ERGAS" if ergas else "dB",
        forced=bool(d.get("forced", fb.get("forced", False))),
        record=sidecar,
        caution=d.get("caution") if isinstance(d.get("caution"), str) else None,
        interp_score=d.get("interp_score") if fell_back else None,
        margin_db=d.get("margin_db") if fell_back else None,
        scored_on=SCORED_ON.get(str(d.get("source")), "held-out pixels"),
        # a classical method asked for on any route (resampling, pan-sharpening, revisit fusion): no model in play
        classical=(d.get("use_model") is False and not d.get("fell_back") and d.get("model_score") is None) or None,
    )
