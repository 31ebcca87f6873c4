"""Intensity normalisation: physical units <-> network units, per channel.

A :class:`Normaliser` is fitted from a domain profile's ``normalisation``
spec (:data:`medsat_sr.domains.Normalisation`) and an image, and is a
per-channel affine map ``y = x * scale_c + offset_c`` (optionally clipped to
``[0, 1]``), where ``x`` is the image *as read* (medsat_sr readers return
physical values: HU, MR intensity, or reflectance when the file carries a
GDAL scale/offset) and ``y`` is in network units, roughly ``[0, 1]``:

============== ==================================================================
method         mapping
============== ==================================================================
hu_window      ``(HU - min) / (max - min)``: fixed, no statistics
percentile     ``(x - p_low) / (p_high - p_low)`` with robust percentiles of this
               image (per channel), computed on the values selected by ``mask``:
               ``"nonzero"`` (MR: no air background), ``"valid"`` (no nodata or
               non-finite values) or ``"all"`` (finite values)
reflectance    ``(DN + add_offset) * scale`` (ESA), i.e. network units are
               reflectance; float inputs are taken as reflectance already
               (``float_is_reflectance``); a scale/offset stored in the file (and
               applied by the reader) is used when ``use_file_scale_offset``
linear         ``DN * scale + offset`` (GDAL convention), ``scale: dtype`` = 1 / max
               of the stored integer dtype
============== ==================================================================

Nodata, non-finite values and pixels outside ``mask`` never enter the
statistics. :meth:`Normaliser.forward` and :meth:`Normaliser.inverse` are pure
affine maps and do not alter where data are invalid: use
:meth:`Normaliser.valid_mask` to know which pixels are valid, and keep
nodata as nodata on output.

:meth:`Normaliser.to_dict` gives JSON data (the checkpoint's
``normalisation`` entry) and :meth:`Normaliser.from_dict` reads it back.

**Applying a checkpoint to another image** (:meth:`Normaliser.for_inference`):
the mapping is re-fitted on the new image with the checkpoint's spec. For
``percentile`` (MR), the percentiles are recomputed on the new image because
MR intensities have no absolute scale and vary from scan to scan; the fixed
mappings (``hu_window``, ``reflectance``, ``linear``) give the same numbers
as in training, except that they honour the new file's dtype and stored
scale/offset. Self-supervised runs fit on the input itself, so re-fitting
reproduces the training statistics exactly.

Example:
    >>> import torch
    >>> from medsat_sr.domains import load_domain
    >>> x = torch.tensor([[[0.0, 10.0], [20.0, 30.0]]])
    >>> n = Normaliser.fit(x, load_domain("ct").normalisation)
    >>> torch.allclose(n.inverse(n.forward(x)), x)
    True
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import TypeAdapter, ValidationError

from medsat_sr.domain_specs import Normalisation
from medsat_sr.domains import DomainProfile
from medsat_sr.errors import ConfigError, DataError, ModelError

__all__ = ["Normaliser", "valid_mask", "data_range", "NORMALISATION_FORMAT"]

logger = logging.getLogger(__name__)

#: ``format`` entry of :meth:`Normaliser.to_dict`.
NORMALISATION_FORMAT = "medsat_sr.normalisation/1"

#: Largest number of values per channel used for percentiles (a strided subsample beyond).
_MAX_PERCENTILE_SAMPLES = 8_000_000


def _plain(x: Any) -> Any:
    """Unwrap a MetaTensor to a plain tensor (other values unchanged)."""
    if isinstance(x, torch.Tensor) and type(x) is not torch.Tensor:
        return x.as_subclass(torch.Tensor)
    return x


def _spec_of(spec: Any) -> Any:
    """A validated normalisation spec from a spec, a mapping or a DomainProfile."""
    if isinstance(spec, DomainProfile):
        return spec.normalisation
    if hasattr(spec, "method") and hasattr(spec, "model_dump"):
        return spec
    if isinstance(spec, Mapping):
        try:
            return TypeAdapter(Normalisation).validate_python(dict(spec))
        except ValidationError as exc:
            raise ConfigError(f"invalid normalisation spec {dict(spec)!r}: {exc.errors()[0]['msg']}") from exc
    raise ConfigError(
        f"a normalisation spec is a DomainProfile, a normalisation model or a mapping, got {type(spec).__name__}"
    )


def valid_mask(
    x: torch.Tensor,
    *,
    nodata: float | None = None,
    mask: torch.Tensor | np.ndarray | None = None,
) -> torch.Tensor:
    """Boolean mask (True = valid) of finite, non-nodata values, shaped like ``x``.

    Args:
        x: image ``(C, *spatial)`` (a MetaTensor's ``nodata`` and
            ``valid_mask`` meta entries are honoured as well).
        nodata: the nodata value (NaN allowed).
        mask: extra validity mask (True = valid) broadcasting to ``x``
            (``(*spatial)``, ``(1, *spatial)`` or ``(C, *spatial)``).

    Returns:
        A bool tensor with the shape of ``x``.

    Raises:
        DataError: a mask that does not broadcast to ``x``.
    """
    meta = getattr(x, "meta", None) or {}
    if nodata is None:
        nodata = meta.get("nodata")
    t = _plain(x)
    valid = torch.isfinite(t) if t.is_floating_point() else torch.ones_like(t, dtype=torch.bool)
    if nodata is not None:
        if isinstance(nodata, float) and math.isnan(nodata):
            pass  # NaN is already excluded by isfinite
        else:
            valid &= t != nodata
    masks = [m for m in (meta.get("valid_mask"), mask) if m is not None]
    for m in masks:
        mt = torch.as_tensor(np.asarray(m) if not isinstance(m, torch.Tensor) else _plain(m)).to(torch.bool)
        try:
            valid = valid & mt.to(valid.device)
            if valid.shape != t.shape:
                raise RuntimeError("shape changed")
        except RuntimeError as exc:
            raise DataError(
                f"validity mask of shape {tuple(mt.shape)} does not broadcast to the image {tuple(t.shape)}"
            ) from exc
    return valid


def _percentiles(values: torch.Tensor, low: float, high: float) -> tuple[float, float]:
    v = values.detach().to("cpu", torch.float64).numpy().ravel()
    if v.size > _MAX_PERCENTILE_SAMPLES:
        v = v[:: int(math.ceil(v.size / _MAX_PERCENTILE_SAMPLES))]
    lo, hi = np.percentile(v, [low, high])
    return float(lo), float(hi)


def _baseline_from(meta: Mapping[str, Any]) -> str | None:
    """The Sentinel-2 processing baseline recorded in an image's meta or tags, if any."""
    for key in ("processing_baseline", "PROCESSING_BASELINE", "s2:processing_baseline"):
        if meta.get(key):
            return str(meta[key])
    header = meta.get("header")
    if isinstance(header, Mapping):
        tag_sets = [header.get("tags")] + list(header.get("band_dataset_tags") or [])
        for tags in tag_sets:
            if isinstance(tags, Mapping):
                for k, v in tags.items():
                    if "PROCESSING_BASELINE" in str(k).upper() and v:
                        return str(v)
    return None


@dataclass
class Normaliser:
    """Per-channel affine map between physical and network units.

    Build it with :meth:`fit` (or :meth:`from_dict`, :meth:`for_inference`).

    Attributes:
        method: ``hu_window``, ``percentile``, ``reflectance`` or ``linear``.
        spec: the normalisation spec as JSON data.
        scale: per-channel factor of ``y = x * scale + offset``.
        offset: per-channel offset.
        clip: clip network values to ``[0, 1]`` in :meth:`forward`.
        nodata: the nodata value of the image it was fitted on (or ``None``).
        stats: the statistics fitted (``p_low``/``p_high`` per channel for
            percentiles, the scale/offset source otherwise), for the record.
    """

    method: str
    spec: dict[str, Any]
    scale: list[float]
    offset: list[float]
    clip: bool = False
    nodata: float | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        image: torch.Tensor | np.ndarray,
        spec: Any,
        *,
        nodata: float | None = None,
        mask: torch.Tensor | np.ndarray | None = None,
        dtype: str | None = None,
        file_scale_offset: tuple[Sequence[float], Sequence[float]] | None = None,
        processing_baseline: str | None = None,
    ) -> Normaliser:
        """Fit the mapping of ``spec`` on ``image``.

        Args:
            image: ``(C, *spatial)`` values as read (a MetaTensor gives
                ``nodata``, ``source_dtype``, the file scale/offset and the
                ``valid_mask`` from its meta when they are not passed).
            spec: a normalisation spec (``profile.normalisation``), its
                mapping, or a DomainProfile (its spec and nodata).
            nodata: value excluded from the statistics.
            mask: extra validity mask (True = valid), e.g. a foreground mask.
            dtype: numpy dtype name of the stored pixels (``scale: dtype``
                and ``float_is_reflectance``).
            file_scale_offset: ``(scales, offsets)`` per channel that the
                reader already applied (GDAL scale/offset), or ``None``.
            processing_baseline: Sentinel-2 processing baseline (``"04.00"``)
                selecting the reflectance offset; default from the image's meta.

        Returns:
            The fitted normaliser.

        Raises:
            ConfigError: an invalid spec, or ``scale: dtype`` without a dtype.
            DataError: not a ``(C, *spatial)`` array, or a channel with no
                valid value to fit percentiles on.
        """
        if isinstance(spec, DomainProfile) and nodata is None:
            nodata = spec.nodata if getattr(image, "meta", {}).get("nodata") is None else None
        sp = _spec_of(spec)
        meta = dict(getattr(image, "meta", None) or {})
        if isinstance(image, np.ndarray):
            image = torch.from_numpy(np.ascontiguousarray(image))
        if not isinstance(image, torch.Tensor):
            raise DataError(f"Normaliser.fit needs a tensor or array, got {type(image).__name__}")
        if image.ndim < 2:
            raise DataError(f"Normaliser.fit needs an image shaped (C, *spatial), got shape {tuple(image.shape)}")
        if nodata is None:
            nodata = meta.get("nodata")
        if dtype is None:
            dtype = meta.get("source_dtype") or str(np.dtype(str(image.dtype).replace("torch.", "")))
        if file_scale_offset is None and meta.get("scales") is not None:
            offs = meta.get("offsets") or [0.0] * len(meta["scales"])
            file_scale_offset = (list(meta["scales"]), list(offs))
        if processing_baseline is None:
            processing_baseline = _baseline_from(meta)
        n_ch = int(image.shape[0])
        spec_dict = sp.model_dump(mode="json")
        nod = None if nodata is None else float(nodata)

        if sp.method == "hu_window":
            width = float(sp.max) - float(sp.min)
            return cls(
                method="hu_window",
                spec=spec_dict,
                scale=[1.0 / width] * n_ch,
                offset=[-float(sp.min) / width] * n_ch,
                clip=bool(sp.clip),
                nodata=nod,
                stats={"window": [float(sp.min), float(sp.max)]},
            )
        if sp.method == "percentile":
            lows, highs = _fit_percentiles(image, sp, nodata, mask)
            return cls(
                method="percentile",
                spec=spec_dict,
                scale=[1.0 / (h - lo) for lo, h in zip(lows, highs)],
                offset=[-lo / (h - lo) for lo, h in zip(lows, highs)],
                clip=bool(sp.clip),
                nodata=nod,
                stats={"p_low": lows, "p_high": highs},
            )
        scales_out, offsets_out, source = _linear_mapping(sp, n_ch, dtype, file_scale_offset, processing_baseline)
        return cls(
            method=sp.method,
            spec=spec_dict,
            scale=[float(v) for v in scales_out],
            offset=[float(v) for v in offsets_out],
            clip=False,
            nodata=nod,
            stats={"source": source, "processing_baseline": processing_baseline, "dtype": dtype},
        )

    @classmethod
    def for_inference(
        cls,
        ckpt_stats: Mapping[str, Any] | None,
        image: torch.Tensor | np.ndarray,
        *,
        spec: Any = None,
        mask: torch.Tensor | np.ndarray | None = None,
    ) -> Normaliser:
        """The normaliser to apply a checkpoint to ``image``.

        The checkpoint's spec is re-fitted on ``image`` (see the module
        docstring): percentiles are recomputed on the new image (MR
        intensities vary from scan to scan), fixed mappings are rebuilt from
        the new file's dtype and scale/offset, which gives the training
        numbers for the same kind of file. When the checkpoint has no
        normalisation (``None``), ``spec`` (the config's profile) is used.

        Args:
            ckpt_stats: the checkpoint's ``normalisation`` entry (:meth:`to_dict`).
            image: the image to be super-resolved, as read.
            spec: fallback spec (``cfg.profile``) when ``ckpt_stats`` is ``None``.
            mask: extra validity mask for the statistics.

        Raises:
            ModelError: neither a checkpoint normalisation nor a spec.
        """
        if ckpt_stats:
            stored = cls.from_dict(ckpt_stats)
            fitted = cls.fit(image, stored.spec, nodata=None if stored.nodata is None else stored.nodata, mask=mask)
            if stored.method == "percentile":
                logger.info(
                    "percentile normalisation re-fitted on the input: p_low %s, p_high %s (training: %s, %s)",
                    fitted.stats.get("p_low"), fitted.stats.get("p_high"),
                    stored.stats.get("p_low"), stored.stats.get("p_high"),
                )
            return fitted
        if spec is None:
            raise ModelError("the checkpoint records no normalisation and no spec was given to fit one")
        return cls.fit(image, spec, mask=mask)

    # ------------------------------------------------------------------ mapping
    @property
    def channels(self) -> int:
        """Number of channels the mapping is for."""
        return len(self.scale)

    def _coeffs(self, x: torch.Tensor, channel_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[channel_dim]
        if n != self.channels:
            if self.channels == 1 or len(set(self.scale)) == 1 and len(set(self.offset)) == 1:
                a, b = [self.scale[0]] * n, [self.offset[0]] * n
            else:
                raise DataError(
                    f"normaliser is for {self.channels} channels, got a tensor with {n} on dim {channel_dim} "
                    f"(shape {tuple(x.shape)})"
                )
        else:
            a, b = self.scale, self.offset
        shape = [1] * x.ndim
        shape[channel_dim] = n
        dt = x.dtype if x.is_floating_point() else torch.float32
        return (
            torch.tensor(a, dtype=torch.float64).to(x.device, dt).reshape(shape),
            torch.tensor(b, dtype=torch.float64).to(x.device, dt).reshape(shape),
        )

    def _channel_dim(self, x: torch.Tensor, channel_dim: int | None) -> int:
        if channel_dim is not None:
            return channel_dim % x.ndim
        # (C, *spatial) unless that does not fit and (B, C, *spatial) does
        if x.shape[0] == self.channels or x.ndim < 3:
            return 0
        return 1 if x.shape[1] == self.channels else 0

    def forward(self, x: torch.Tensor | np.ndarray, *, channel_dim: int | None = None) -> torch.Tensor:
        """Physical -> network units: ``x * scale + offset`` (clipped when the spec says so).

        Args:
            x: ``(C, *spatial)`` or ``(B, C, *spatial)`` (``channel_dim`` picks).
            channel_dim: the channel axis; default 0, or 1 for batches.

        Returns:
            A float tensor (float32 for integer input); a MetaTensor's meta is not kept.
        """
        t = _plain(torch.as_tensor(x) if isinstance(x, np.ndarray) else x)
        if not t.is_floating_point():
            t = t.to(torch.float32)
        a, b = self._coeffs(t, self._channel_dim(t, channel_dim))
        y = t * a + b
        return y.clamp(0.0, 1.0) if self.clip else y

    __call__ = forward

    def inverse(self, y: torch.Tensor | np.ndarray, *, channel_dim: int | None = None) -> torch.Tensor:
        """Network -> physical units: ``(y - offset) / scale``."""
        t = _plain(torch.as_tensor(y) if isinstance(y, np.ndarray) else y)
        if not t.is_floating_point():
            t = t.to(torch.float32)
        a, b = self._coeffs(t, self._channel_dim(t, channel_dim))
        return (t - b) / a

    def valid_mask(self, x: torch.Tensor, mask: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
        """Valid (finite, not nodata, inside ``mask``) pixels of ``x`` in physical units."""
        return valid_mask(x, nodata=self.nodata, mask=mask)

    def data_range(self) -> float:
        """The width of the nominal range in network units.

        1 for ``hu_window`` (the window) and ``percentile`` (``p_low..p_high``);
        for ``reflectance``/``linear``, the unit of the physical quantity
        (reflectance 0..1, DN/255 0..1). Use :func:`data_range` for the
        data range of a metric spec.
        """
        return 1.0

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """JSON data for the checkpoint (``normalisation``)."""
        return {
            "format": NORMALISATION_FORMAT,
            "method": self.method,
            "spec": dict(self.spec),
            "scale": [float(v) for v in self.scale],
            "offset": [float(v) for v in self.offset],
            "clip": bool(self.clip),
            "nodata": None if self.nodata is None or math.isnan(self.nodata) else float(self.nodata),
            "nodata_is_nan": bool(self.nodata is not None and math.isnan(self.nodata)),
            "stats": dict(self.stats),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Normaliser:
        """Rebuild from :meth:`to_dict` data.

        Raises:
            ModelError: not normalisation data, or inconsistent entries.
        """
        if not isinstance(d, Mapping) or d.get("format") != NORMALISATION_FORMAT:
            raise ModelError(
                f"not medsat_sr normalisation data (format {d.get('format') if isinstance(d, Mapping) else None!r}, "
                f"expected {NORMALISATION_FORMAT!r})"
            )
        try:
            scale = [float(v) for v in d["scale"]]
            offset = [float(v) for v in d["offset"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"normalisation data has no valid scale/offset lists: {exc}") from exc
        if len(scale) != len(offset) or not scale or any(v == 0 or not math.isfinite(v) for v in scale):
            raise ModelError(f"normalisation data has invalid scale {scale} / offset {offset}")
        nodata = float("nan") if d.get("nodata_is_nan") else d.get("nodata")
        return cls(
            method=str(d.get("method")),
            spec=dict(d.get("spec") or {}),
            scale=scale,
            offset=offset,
            clip=bool(d.get("clip", False)),
            nodata=None if nodata is None else float(nodata),
            stats=dict(d.get("stats") or {}),
        )


def data_range(
    metric_spec: Any,
    reference: torch.Tensor | np.ndarray,
    normaliser: Normaliser,
    *,
    mask: torch.Tensor | np.ndarray | None = None,
) -> float:
    """The PSNR/SSIM data range, in network units, that a metric spec asks for.

    Args:
        metric_spec: a :class:`~medsat_sr.domains.MetricSpec`.
        reference: the reference in *network* units.
        normaliser: the normaliser that produced it.
        mask: valid pixels of the reference (True = valid).

    Returns:
        ``reference_range``: ``max - min`` of the valid reference values;
        ``window`` and ``percentile``: 1 (the window / the percentile range);
        ``fixed``: ``data_range_value`` times the normaliser's scale.

    Raises:
        DataError: no valid reference value.
    """
    kind = metric_spec.data_range
    if kind in ("window", "percentile"):
        return 1.0
    if kind == "fixed":
        return float(metric_spec.data_range_value) * float(np.mean(np.abs(normaliser.scale)))
    ref = _plain(torch.as_tensor(reference))
    ok = torch.isfinite(ref)
    if mask is not None:
        ok &= torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).to(torch.bool)
    vals = ref[ok]
    if vals.numel() == 0:
        raise DataError("data_range: the reference has no valid value")
    rng = float(vals.max() - vals.min())
    return rng if rng > 0 else 1.0


def _fit_percentiles(
    image: torch.Tensor, sp: Any, nodata: float | None, mask: torch.Tensor | np.ndarray | None,
) -> tuple[list[float], list[float]]:
    """Per-channel (or pooled) low and high percentiles of the valid values (``percentile`` specs).

    Raises:
        DataError: a channel with no valid value.
    """
    n_ch = int(image.shape[0])
    valid = valid_mask(image, nodata=nodata, mask=mask)
    t = _plain(image)
    if sp.mask == "nonzero":
        valid &= t != 0
    elif sp.mask == "all":
        valid = torch.isfinite(t) if t.is_floating_point() else torch.ones_like(valid)
        if mask is not None:
            valid &= valid_mask(t, mask=mask)
    groups = [[c] for c in range(n_ch)] if sp.per_channel else [list(range(n_ch))]
    lows, highs = [0.0] * n_ch, [1.0] * n_ch
    for chans in groups:
        vals = torch.cat([t[c][valid[c]].reshape(-1) for c in chans])
        if vals.numel() == 0:
            raise DataError(
                f"channel(s) {chans}: no valid values to fit percentiles on "
                f"(mask {sp.mask!r}, nodata {nodata!r}); the image is empty or all nodata"
            )
        lo, hi = _percentiles(vals, float(sp.low), float(sp.high))
        if not hi > lo:
            logger.warning(
                "channel(s) %s: percentiles p%g = p%g = %g (constant image); using a unit range",
                chans, sp.low, sp.high, lo,
            )
            hi = lo + 1.0
        for c in chans:
            lows[c], highs[c] = lo, hi
    return lows, highs


def _linear_mapping(
    sp: Any, n_ch: int, dtype: str, file_scale_offset: tuple[Sequence[float], Sequence[float]] | None,
    processing_baseline: str | None,
) -> tuple[list[float], list[float], str]:
    """``reflectance`` / ``linear`` specs: per-channel ``(scales, offsets, source)`` with physical = x * s + o.

    The profile's mapping of the stored DN; when the reader already applied the
    file's scale/offset, that is either kept (``use_file_scale_offset``) or
    undone before the profile's mapping.

    Raises:
        DataError: ``file_scale_offset`` does not have one scale and offset per channel.
    """
    is_float = np.dtype(dtype).kind == "f"
    if sp.method == "reflectance":
        s, o = sp.scale_offset(processing_baseline)
        source = f"profile (baseline {processing_baseline or 'unknown'})"
        if file_scale_offset is None and is_float and sp.float_is_reflectance:
            s, o, source = 1.0, 0.0, "float input taken as reflectance"
    else:
        s, o = sp.scale_offset(dtype)
        source = "profile"
    scales_out, offsets_out = [s] * n_ch, [o] * n_ch
    if file_scale_offset is not None:
        fs, fo = (list(v) for v in file_scale_offset)
        if len(fs) != n_ch or len(fo) != n_ch:
            raise DataError(
                f"file_scale_offset has {len(fs)} scales and {len(fo)} offsets for an image with {n_ch} channels"
            )
        if sp.use_file_scale_offset:  # the reader already applied the file's mapping: x is physical
            scales_out, offsets_out, source = [1.0] * n_ch, [0.0] * n_ch, "file scale/offset (applied by the reader)"
        else:  # undo the file's mapping, apply the profile's: DN = (x - fo) / fs
            scales_out = [s / a for a in fs]
            offsets_out = [o - b * s / a for a, b in zip(fs, fo)]
            source = "profile (file scale/offset undone)"
    return scales_out, offsets_out, source
