"""The package's layers only point down (ARCHITECTURE.md, DESIGN.md section 2).

Every module under ``medsat_sr/`` is parsed with :mod:`ast` (nothing is
imported), and every import it makes, at module level or inside a function,
is checked against :data:`LAYERS`: a module may import modules of its own
layer or of a lower one, never a higher one. Below the CLI, no module may
import the package root (``import medsat_sr``, or ``from medsat_sr import X``
where X is not a submodule): the root re-exports the curated API, so
importing it from inside pulls in everything and makes cycles.

To move a module to another layer, or to add one, edit :data:`LAYERS`; a
module the table does not place makes :func:`test_every_module_has_a_layer`
fail.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "medsat_sr"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: Layer of each module or package (a package entry covers all its submodules;
#: the longest matching entry wins). Imports may only point to the same layer
#: or a lower number.
LAYERS: dict[str, int] = {
    # 0: foundations, no domain knowledge
    "medsat_sr.errors": 0,
    "medsat_sr._version": 0,
    "medsat_sr._atomic": 0,
    "medsat_sr.file_hash": 0,  # sha256 of a file
    "medsat_sr._schema": 0,
    "medsat_sr._resources": 0,
    "medsat_sr.geometry": 0,
    "medsat_sr.degrade": 0,
    "medsat_sr.psf": 0,  # the degradation operators: Gaussian/box PSFs, decimation, slice profiles, noise
    "medsat_sr.psf_decimate": 0,  # sensor PSF + decimation, noise
    "medsat_sr.kspace": 0,  # k-space truncation (MR acquisition at a lower matrix)
    "medsat_sr.peak_memory": 0,  # peak resident memory of a block of work
    "medsat_sr.hardware": 0,  # precision auto: bf16 only where the CPU (or CUDA) runs it natively
    "medsat_sr.estimate": 0,
    "medsat_sr.phantoms": 0,  # synthetic volumes with an exact truth (isotropic power-law fields)
    "medsat_sr.degradation_auto": 2,
    "medsat_sr.baselines": 0,
    "medsat_sr.metrics": 0,
    "medsat_sr.metrics_bands": 0,  # SAM, ERGAS, per-band scores
    "medsat_sr.metrics_shift": 0,  # cPSNR, cSSIM (PROBA-V)
    "medsat_sr.pansharpen_metrics": 0,  # pan-sharpening indices: Q2n, QNR, HQNR (#17)
    "medsat_sr.image": 0,
    "medsat_sr.samples": 0,  # a data package (sample files only)
    "medsat_sr.logs": 0,  # CLI logging set-up, JSON lines, warnings that name their file
    "medsat_sr.progress": 0,  # tqdm bars on a terminal, a line per 10 % elsewhere
    # 1: formats, networks, declarative knowledge
    "medsat_sr.io": 1,
    "medsat_sr.models": 1,
    "medsat_sr.domains": 1,
    "medsat_sr.config": 1,
    "medsat_sr.config_sections": 1,  # the sections of a job config (data, model, train, bands ...)
    "medsat_sr.config_checks": 1,  # the config rules that need the domain profile
    "medsat_sr.overrides": 1,  # --set overrides: parsing and applying dotted keys to a config mapping
    "medsat_sr.domain_specs": 1,  # the domain profile's pydantic sections (bands, normalisation, degradation, metrics)
    "medsat_sr.normalise": 1,  # fits a profile's normalisation spec (imports domains)
    "medsat_sr.zoo": 1,  # the shipped models' catalogue (JSON only) and their files
    "medsat_sr.pansharpen": 1,  # pan-sharpening: sensors, grids, classical methods (#17)
    # 2: learning
    "medsat_sr.data": 2,
    "medsat_sr.pair_makers": 2,  # normalised images and the pair sources built from them
    "medsat_sr.sampling": 2,  # patch sampling and held-out splits
    "medsat_sr.pair_sources": 2,  # (LR, HR) patch sources: slice-profile, aligned; the patch dataset
    "medsat_sr.engine": 2,  # the MONAI trainer and evaluator of a fit
    "medsat_sr.engine_handlers": 2,  # the fit's ignite handlers
    "medsat_sr.train_batch": 2,  # a batch as the networks and scores take it
    "medsat_sr.model_start": 2,  # the network a fit starts from (fresh, a checkpoint, the first of several that fits)
    "medsat_sr.losses": 2,  # training losses (pixel, SSIM, combined)
    "medsat_sr.run_folder": 2,  # a training run's files: checkpoints, resume state, metrics.csv, curves.png
    "medsat_sr.train": 2,
    "medsat_sr.checkpoint": 2,
    "medsat_sr.fusion": 2,
    "medsat_sr.slicewise": 2,  # a 2D network over the slices or planes of a volume
    "medsat_sr.distributed": 2,
    "medsat_sr.trust": 2,
    "medsat_sr.pansharpen.learned": 2,  # the self-supervised pan-sharpening network (#17)
    "medsat_sr.multistack": 2,  # multi-stack volume reconstruction (registration, forward model, solver)
    "medsat_sr.revisit": 2,  # revisit-stack raster fusion (masks, registration, classical and learned fusion)
    # 3: upscaling
    "medsat_sr.inference": 3,
    # 4: jobs built on upscaling
    "medsat_sr.evaluate": 4,
    "medsat_sr.evaluate_bands": 4,  # band sets by Wald's protocol: per-band RMSE, SAM, ERGAS (#13)
    "medsat_sr.evaluate_pansharpen": 4,  # pan-sharpening: every method on the held-out half (#17)
    "medsat_sr.batch": 4,
    "medsat_sr.batch_journal": 4,  # the batch's append-only journal and its lock
    "medsat_sr.batch_inputs": 4,  # the batch's inputs: folders, globs and manifests into InputSpecs
    "medsat_sr.batch_plan": 4,  # one task per input: output names, job hash, the resume checks
    "medsat_sr.batch_execute": 4,  # one batch item's job and the executors (inline, Dask)
    "medsat_sr.evaluate_methods": 4,  # which methods an evaluation runs, and one run on a case
    "medsat_sr.evaluate_degrade": 4,  # a case's input: the reference degraded by the profile's recipe
    "medsat_sr.evaluate_cases": 4,  # evaluation cases: reference -> degraded input, crops, hold-outs
    "medsat_sr.evaluate_scoring": 4,  # evaluation scoring: metric settings, data ranges, masks, scores
    "medsat_sr.report": 4,
    "medsat_sr.report_figures": 4,  # the report's PNG figures
    "medsat_sr.report_plain": 4,
    "medsat_sr.demo": 4,
    "medsat_sr.info": 4,
    # 5: entry points and the curated API
    "medsat_sr.cli": 5,
    "medsat_sr.__main__": 5,
    "medsat_sr": 5,  # the package root (__init__.py)
}

#: The layers by name, for messages.
LAYER_NAMES: dict[int, str] = {
    0: "foundations",
    1: "io/models/domains/config",
    2: "learning",
    3: "inference",
    4: "evaluate/batch/report/demo/info",
    5: "cli",
}

#: Upward imports that are allowed on purpose: (importer, imported).
#: inference.options only declares the typed upscale options (pydantic
#: models); config embeds them so that CLI flags, API keyword arguments and
#: configs share one definition. It must stay declaration-only, which
#: :func:`test_allowed_upward_imports_are_declaration_only` checks.
ALLOWED_UP: frozenset[tuple[str, str]] = frozenset(
    {
        ("medsat_sr.config", "medsat_sr.inference.options"),
        ("medsat_sr.config_sections", "medsat_sr.inference.options"),
        ("medsat_sr.config", "medsat_sr.multistack.options"),
        ("medsat_sr.config", "medsat_sr.revisit.options"),
    }
)


# --------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class Import:
    """One import statement's target inside the package."""

    importer: str
    target: str  # the module depended on (a submodule when one is named)
    line: int
    root_name: str | None = None  # ``from medsat_sr import X`` with X not a submodule, or "" for ``import medsat_sr``


def module_name(path: Path, root: Path = ROOT, package: str = PACKAGE) -> str:
    """Dotted name of the module at ``path`` (``__init__.py`` names its package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def all_modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every ``.py`` module of the package, by dotted name."""
    return {module_name(p, root, package): p for p in sorted(root.rglob("*.py")) if "__pycache__" not in p.parts}


def _is_module(dotted: str, known: set[str]) -> bool:
    return dotted in known


def collect_imports(source: str, importer: str, *, is_package: bool, known: set[str], package: str = PACKAGE) -> list[Import]:
    """The package-internal imports of one module's source, anywhere in the file.

    Args:
        source: the module's source text.
        importer: its dotted name.
        is_package: whether it is an ``__init__.py`` (relative imports resolve
            from the package itself, not its parent).
        known: the dotted names of every module of the package, to tell
            ``from P import submodule`` from ``from P import name``.
        package: the top-level package name.

    Returns:
        One :class:`Import` per imported module, in source order.
    """
    tree = ast.parse(source)
    here = importer.split(".") if is_package else importer.split(".")[:-1]
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package:
                    found.append(Import(importer, package, node.lineno, root_name=""))
                elif alias.name.startswith(package + "."):
                    found.append(Import(importer, alias.name, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            if base != package and not base.startswith(package + "."):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if _is_module(sub, known):
                    found.append(Import(importer, sub, node.lineno))
                elif base == package:
                    found.append(Import(importer, package, node.lineno, root_name=alias.name))
                else:
                    found.append(Import(importer, base, node.lineno))
    unique = {(i.target, i.line, i.root_name): i for i in found}  # one per module and line
    return sorted(unique.values(), key=lambda i: i.line)


def layer_of(module: str, layers: dict[str, int] = LAYERS) -> int | None:
    """The layer of ``module``: its longest matching entry in ``layers``, or None."""
    parts = module.split(".")
    for k in range(len(parts), 0, -1):
        key = ".".join(parts[:k])
        if key in layers:
            return layers[key]
    return None


def _label(layer: int | None) -> str:
    return "unplaced" if layer is None else f"layer {layer} ({LAYER_NAMES.get(layer, '?')})"


MODULES = all_modules()
KNOWN = set(MODULES)


def imports_of(module: str) -> list[Import]:
    """The package-internal imports of one of :data:`MODULES`."""
    path = MODULES[module]
    return collect_imports(path.read_text(encoding="utf-8"), module, is_package=path.name == "__init__.py", known=KNOWN)


def upward_imports(module: str) -> list[str]:
    """A message for every import of ``module`` that points to a higher layer."""
    mine = layer_of(module)
    out = []
    for imp in imports_of(module):
        if imp.target == PACKAGE:
            continue  # the root is checked by test_no_module_below_cli_imports_the_package_root
        theirs = layer_of(imp.target)
        if mine is None or theirs is None or (mine < theirs and (module, imp.target) not in ALLOWED_UP):
            out.append(
                f"{module} ({_label(mine)}) imports {imp.target} ({_label(theirs)}) "
                f"at {MODULES[module].relative_to(ROOT.parent)}:{imp.line}"
            )
    return out


# --------------------------------------------------------------------------- the parser itself
def test_collect_imports_sees_every_form() -> None:
    """Module-level, in-function, relative, submodule and package-root imports are all found."""
    known = {"medsat_sr", "medsat_sr.io", "medsat_sr.io.dicom", "medsat_sr.geometry", "medsat_sr.inference",
             "medsat_sr.inference.api", "medsat_sr.inference.plan"}
    src = (
        "import os\n"
        "import medsat_sr.geometry\n"
        "from medsat_sr.io import read\n"
        "def f():\n"
        "    from medsat_sr.inference import api as a\n"
        "    import medsat_sr\n"
        "    from medsat_sr import upscale, io\n"
        "    from . import plan\n"
        "    from .api import upscale\n"
        "    from ..io import dicom\n"
        "    from numpy import zeros\n"
    )
    got = collect_imports(src, "medsat_sr.inference.volume", is_package=False, known=known)
    assert [(i.target, i.root_name) for i in got] == [
        ("medsat_sr.geometry", None),
        ("medsat_sr.io", None),
        ("medsat_sr.inference.api", None),
        ("medsat_sr", ""),
        ("medsat_sr", "upscale"),
        ("medsat_sr.io", None),
        ("medsat_sr.inference.plan", None),
        ("medsat_sr.inference.api", None),
        ("medsat_sr.io.dicom", None),
    ]
    # in a package's __init__, "from . import x" is relative to the package itself
    got = collect_imports("from . import api\n", "medsat_sr.inference", is_package=True, known=known)
    assert [i.target for i in got] == ["medsat_sr.inference.api"]


def test_layer_of_uses_the_longest_entry() -> None:
    assert layer_of("medsat_sr.inference.options") == LAYERS["medsat_sr.inference"]
    assert layer_of("medsat_sr.io.geotiff") == LAYERS["medsat_sr.io"]
    assert layer_of("medsat_sr.cli.upscale") == LAYERS["medsat_sr.cli"]
    assert layer_of("medsat_sr") == LAYERS["medsat_sr"]
    assert layer_of("medsat_sr.no_such_module") == LAYERS["medsat_sr"]  # falls back to the root's entry
    assert layer_of("other.module") is None


# --------------------------------------------------------------------------- the rules
def test_every_module_has_a_layer() -> None:
    """The table places every module by its own entry or its package's (not by the root's fallback)."""
    unplaced = []
    for mod in MODULES:
        parts = mod.split(".")
        if mod != PACKAGE and not any(".".join(parts[:k]) in LAYERS for k in range(2, len(parts) + 1)):
            unplaced.append(mod)
    assert not unplaced, f"modules missing from LAYERS in tests/test_layering.py: {unplaced}"
    assert len(MODULES) > 30, f"found only {len(MODULES)} modules under {ROOT}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    bad = upward_imports(module)
    assert not bad, "imports that point up a layer:\n  " + "\n  ".join(bad)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer_of(m) < LAYERS["medsat_sr.cli"]))
def test_no_module_below_cli_imports_the_package_root(module: str) -> None:
    bad = [
        f"{module} ({_label(layer_of(module))}) imports the package root "
        + ("(import medsat_sr)" if imp.root_name == "" else f"(from medsat_sr import {imp.root_name})")
        + f" at {MODULES[module].relative_to(ROOT.parent)}:{imp.line}; import the defining module instead"
        for imp in imports_of(module)
        if imp.target == PACKAGE
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("pair", sorted(ALLOWED_UP), ids=lambda p: f"{p[0]}->{p[1]}")
def test_allowed_upward_imports_are_declaration_only(pair: tuple[str, str]) -> None:
    """An allowed upward target may itself only import the importer's layer or below.

    Otherwise the exception would smuggle the higher layer's dependencies
    (torch engines, readers, ...) into the lower layer.
    """
    importer, target = pair
    if target not in MODULES:
        pytest.skip(f"{target} does not exist (yet)")
    ceiling = layer_of(importer)
    bad = [
        f"{target} (allowed for {importer}, {_label(ceiling)}) imports {imp.target} ({_label(layer_of(imp.target))})"
        for imp in imports_of(target)
        if imp.target == PACKAGE or layer_of(imp.target) is None or layer_of(imp.target) > ceiling
    ]
    assert not bad, "\n".join(bad)
