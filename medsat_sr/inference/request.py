"""The request of one upscale run, checked before any model work: its input, options and output.

:func:`read_source` reads the input (a volume whole; a raster or band set is
streamed later, by path); :func:`request_options` validates the options
against the config's ``inference:``/``output:`` sections (or ``--set`` items
without a config) and resolves device and precision; :func:`output_target`
names the writer; :func:`check_request` refuses what cannot work (a volume
to a GeoTIFF, a config for the other kind) before a fit costs minutes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor

from medsat_sr._atomic import check_writable
from medsat_sr._schema import check_path
from medsat_sr.config import JobConfig
from medsat_sr.errors import ConfigError, DataError, FormatError
from medsat_sr.hardware import resolve_precision
from medsat_sr.image import BandSet, Key, is_raster, is_volume, one_grid_raster
from medsat_sr.inference.members import resolve_device
from medsat_sr.inference.options import UpscaleOptions, resolve_options
from medsat_sr.inference.plan import check_fit_route, check_input_size
from medsat_sr.inference.shipped import fit_on_input
from medsat_sr.io import (
    check_read_options,
    detect_format,
    geotiff_bandset,
    geotiff_read,
    nifti_header,
    output_format,
)
from medsat_sr.io import read as io_read
from medsat_sr.overrides import parse_override
from medsat_sr.trust import sha256_path, sidecar_path

__all__ = ["Source", "read_source", "request_options", "output_target", "check_not_input", "check_request", "check_labels",
           "fit_input", "fit_member"]

logger = logging.getLogger("medsat_sr.inference")

#: Values sampled, and the most distinct ones, for the label-map warning on unmarked integer volumes.
_LABEL_SAMPLE = 1 << 20
_LABEL_MAX_CLASSES = 64


@dataclass
class Source:
    """The input of a run: a volume in memory, or a raster (in memory or named by path, streamed)."""

    kind: str
    path: Path | None = None
    sha: str | None = None
    volume: MetaTensor | None = None
    raster: MetaTensor | BandSet | None = None

    @property
    def is_volume(self) -> bool:
        """Whether the input is a volume."""
        return self.volume is not None


def read_source(image: Any, read_options: Mapping[str, Any] | None) -> Source:
    """The run's input: a volume read whole, a raster or band set named by path (streamed later) or in memory."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        kind = detect_format(path)
        src = Source(kind=kind, path=path)
        if kind in ("dicom", "nifti"):
            src.volume = io_read(path, fmt=kind, **dict(read_options or {}))
            if not is_volume(src.volume):
                raise FormatError(f"{path}: expected a volume, got a {src.volume.meta.get(Key.KIND)}")
        else:  # a raster is streamed later, without them: refuse its stray reader options now
            check_read_options(path, kind, read_options or {})
        src.sha = sha256_path(path)
        check_input_size(src.volume, None, path, kind)
        return src
    if isinstance(image, BandSet):
        src = Source(kind="bandset", raster=image)
    elif isinstance(image, MetaTensor) and is_volume(image):
        src = Source(kind="volume", volume=image)
    elif isinstance(image, MetaTensor) and is_raster(image):
        src = Source(kind="geotiff", raster=image)
    else:
        raise DataError(f"image must be a path, a volume, a raster or a BandSet, got {type(image).__name__}")
    check_input_size(src.volume, src.raster, None, src.kind)
    return src


def _override_sections(overrides: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--set`` items without a job config: only ``inference.*``, ``output.*`` and ``bands.others``."""
    data: dict[str, dict[str, Any]] = {"inference": {}, "output": {}, "bands": {}}
    for item in overrides:
        parts, value = parse_override(item)
        try:
            check_path(JobConfig, parts)  # unknown keys get a did-you-mean hint
        except ConfigError as exc:
            raise ConfigError(f"--set {item!r}: {exc}") from None
        if parts[0] not in data or len(parts) != 2 or parts == ["bands", "targets"] or parts == ["bands", "guides"]:
            raise ConfigError(f"--set {item!r}: without --config only inference.*, output.* and bands.others can be set")
        data[parts[0]][parts[1]] = value
    others = data["bands"].get("others", "cubic")
    if others not in ("cubic", "drop"):
        raise ConfigError(f"--set bands.others: expected 'cubic' or 'drop', got {others!r}")
    return data


def _budget_from_set(cfg: JobConfig | None, overrides: Sequence[str], given: Mapping[str, Any]) -> Mapping[str, Any]:
    """``--set train.max_minutes=M`` without ``--budget``: M minutes is the fit's budget, a fine-tune's too.

    A fine-tune of a shipped model otherwise runs for the default one
    minute, whatever the config's ``train.max_minutes`` says; one asked for
    on the command line is not dropped in silence.
    """
    if cfg is None or given.get("budget") is not None:
        return given
    if not any(parse_override(item)[0] == ["train", "max_minutes"] for item in overrides):
        return given
    return {**given, "budget": 60.0 * float(cfg.train.max_minutes)}


def request_options(cfg: JobConfig | None, overrides: Sequence[str], given: Mapping[str, Any]) -> tuple[UpscaleOptions, str]:
    """The validated options (device and precision resolved for this machine) and ``bands.others``."""
    given = _budget_from_set(cfg, overrides, given)
    if cfg is not None:
        sections: Mapping[str, Any] = {"inference": cfg.inference, "output": cfg.output}
        others = cfg.bands.others
    else:
        data = _override_sections(overrides)
        sections, others = data, data["bands"].get("others", "cubic")
    opts = resolve_options(sections, given)
    device = resolve_device(opts.device)
    precision = resolve_precision(opts.precision, device)
    return opts.model_copy(update={"device": device, "precision": precision}), others


def output_target(output: Any, opts: UpscaleOptions, inputs: Sequence[Any] = ()) -> tuple[Path | None, str | None]:
    """The output path and its format (``cog`` when asked for a GeoTIFF), checked writable; ``(None, None)``: none.

    Raises:
        ConfigError: the output names one of ``inputs`` (paths; images in memory are skipped).
    """
    if output is None:
        return None, None
    out_path = Path(output)
    check_not_input(out_path, inputs)
    check_folder_output(out_path)
    fmt = output_format(out_path, None if opts.format == "auto" else opts.format)
    if opts.cog and fmt == "geotiff":
        fmt = "cog"
    check_writable(out_path)
    return out_path, fmt


def check_request(src: Source, cfg: JobConfig | None, fmt: str | None, opts: UpscaleOptions, *, target_spacing: Any,
                   out_path: Path | None, cfg_label: str | None = None) -> None:
    """Everything about input, config and writer that can be refused before any model work.

    ``cfg_label`` names where ``cfg`` came from in an error (default: its source; a shipped model's name when the
    config is the one it serves).
    """
    if not src.is_volume and target_spacing is not None:
        raise ConfigError("target_spacing (--target-spacing) is for volumes; rasters take a scale (--scale)")
    if cfg is not None and (cfg.profile.kind == "volume") != src.is_volume:
        what = cfg_label or f"{cfg.source}: the config"
        raise ConfigError(f"{what} is for {cfg.profile.kind}s, the input is a {'volume' if src.is_volume else 'raster'}")
    if cfg is not None and src.kind == "bandset" and src.path is not None and cfg.train.mode == "self_supervised":
        _check_grids(Path(src.path), cfg)
    if fmt is None:
        return
    if src.is_volume and fmt in ("geotiff", "cog"):
        raise FormatError(f"{out_path}: a volume is written as .nii/.nii.gz or a DICOM folder (no suffix)")
    if src.is_volume and fmt == "dicom" and opts.dtype == "float32":
        raise ConfigError("DICOM stores integers; use --dtype source for a DICOM output (or write .nii.gz for float32)")
    if not src.is_volume and fmt == "nifti":
        raise FormatError(f"{out_path}: a raster is written to a .tif file (or a band folder for band sets)")


def check_not_input(output: Any, inputs: Sequence[Any]) -> None:
    """Refuse an output that names one of the inputs (through links too): a typo would replace the data.

    Raises:
        ConfigError: it does (``inputs`` that are images in memory are skipped).
    """
    out = Path(output)
    for item in inputs:
        if not isinstance(item, (str, os.PathLike)):
            continue
        p = Path(item)
        if (os.path.samefile(p, out) if p.exists() and out.exists() else p.resolve() == out.resolve()):
            raise ConfigError(f"{out}: the output would overwrite the input; write it under another name")


def check_folder_output(out_path: Path) -> None:
    """Refuse to replace a folder that holds files medsat_sr did not write (a DICOM series or band folder output).

    A folder output replaces the whole folder. An empty folder, or one whose
    trust record (``FOLDER.json`` beside it) names it as its output (an
    earlier run's), may go; anything else would be lost with it.

    Raises:
        ConfigError: the folder holds other files.
    """
    if not out_path.is_dir():
        return
    entries = sorted(e.name for e in out_path.iterdir())
    if not entries:
        return
    try:
        record = json.loads(sidecar_path(out_path).read_text())
        written = Path((record.get("output") or {}).get("path") or "")  # as given then: relative to that run's folder
        if written.name and written.name == out_path.resolve().name:
            return
    except (OSError, ValueError, AttributeError):
        pass
    shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    raise ConfigError(f"{out_path}: the folder exists and holds files that no earlier run wrote there ({shown}); "
                      "a folder output replaces the whole folder: give a new or empty folder")


def check_labels(src: Source, method: str | None) -> None:
    """A label map holds classes: only nearest-neighbour upsampling keeps them labels.

    Label maps are known by their format's own mark: a raster's colour table, a NIfTI's intent code
    ``NIFTI_INTENT_LABEL`` (1002).

    Raises:
        ConfigError: a label map with any other method, a model or a config.
    """
    if method == "nearest":
        return
    if src.is_volume:
        if nifti_header.is_label_map(src.volume.meta.get(Key.HEADER)):
            raise ConfigError(f"{src.path or 'the volume'}: a label map (NIfTI intent 'label', such as a "
                              "segmentation): interpolating or super-resolving labels makes up classes; upscale it "
                              "with --method nearest")
        _warn_if_labels(src)
        return
    if src.kind != "geotiff":
        return
    if src.path is not None:
        paletted = geotiff_read.is_paletted(src.path)
    else:
        header = (src.raster.meta.get(Key.HEADER) or {}) if isinstance(src.raster, MetaTensor) else {}
        paletted = (header.get("colorinterp") or [None])[0] == "palette"
    if paletted:
        raise ConfigError(f"{src.path or 'the raster'}: a paletted raster (a colour table over class labels, such as a "
                          "land-cover map): interpolating or super-resolving labels makes up classes; upscale it "
                          "with --method nearest")


def _warn_if_labels(src: Source) -> None:
    """Warn when an integer volume unmarked as labels holds few distinct values (most segmentations are unmarked)."""
    meta = src.volume.meta
    if not str(meta.get(Key.SOURCE_DTYPE) or "float").startswith(("uint", "int")):
        return
    flat = src.volume.as_tensor().reshape(-1)
    sample = flat[:: max(1, flat.numel() // _LABEL_SAMPLE)]
    values = torch.unique(sample)
    if 2 < values.numel() <= _LABEL_MAX_CLASSES and bool((values >= 0).all()):
        listed = ", ".join(f"{v:g}" for v in values[:6].tolist()) + (", ..." if values.numel() > 6 else "")
        logger.warning("%s holds only %d distinct values (%s): if it is a label map, interpolation makes up "
                       "classes; upscale it with --method nearest", src.path or "the volume", values.numel(), listed)


def _check_grids(folder: Path, cfg: JobConfig) -> None:
    """A band folder of several grids needs a guided config (targets sharpened by guides): refuse it otherwise."""
    if cfg.guided():
        return
    grids = geotiff_bandset.band_grids(folder)
    if len(grids) > 1:
        listing = " | ".join(" ".join(g[:3]) + (" ..." if len(g) > 3 else "") for g in grids)
        raise ConfigError(
            f"{folder}: {len(grids)} band grids ({listing}), and {cfg.name} sharpens one raster (it names no "
            "bands.targets and bands.guides, as sentinel2_20m_to_10m does); upscale one grid's bands (a folder "
            "of one grid, or one file), or use a guided config or model"
        )


def fit_input(src: Source, cfg: JobConfig, scale: Any, target_spacing: Any) -> Any:
    """What a self-supervised fit of ``cfg`` trains (and validates) on: the volume, raster or band set."""
    if src.is_volume:
        check_fit_route(src.volume, cfg, scale, target_spacing)
        return src.volume
    img = src.raster if src.raster is not None else io_read(src.path, fmt=src.kind)
    return img if cfg.guided() else one_grid_raster(img)


def fit_member(src: Source, cfg: JobConfig, run_dir: Any, progress: bool, scale: Any, target_spacing: Any,
                opts: UpscaleOptions) -> Any:
    """Fit on the input itself (fine-tuning the shipped model by default), once the request has been checked."""
    if cfg.train.mode == "supervised":
        raise ConfigError(
            f"{cfg.source}: a supervised config trains on references first (medsat-sr train); "
            "upscale with --model CKPT, or use a self-supervised config"
        )
    if not src.is_volume and src.raster is None and src.path is not None:
        src.raster = io_read(src.path)  # read once: the fit and the run share it
    return fit_on_input(fit_input(src, cfg, scale, target_spacing), cfg, opts, run_dir=run_dir, progress=progress)
