"""Super-resolution networks: one plain dict of architectures and ``build_model``.

Generators (:data:`MODELS`), all 2D or 3D, any channel count, per-axis
(anisotropic, possibly non-integer) scale, residual over interpolation, zero
output layer at initialisation (an untrained model *is* interpolation):

===============  =============================================================
``"srresnet"``   SRResNet (Ledig et al. 2017), batch norm optional (off)
``"edsr"``       EDSR (Lim et al. 2017)
``"rcan"``       RCAN with channel attention (Zhang et al. 2018)
``"dcsrn"``      multi-level densely connected net (mDCSRN, Chen et al. 2018)
``"guided"``     band-guided net, DSen2-like (Lanaras et al. 2018):
                 ``forward(coarse, guide)``
``"unguided"``   the guided net without its guide, for ablations
===============  =============================================================

Discriminators (:data:`DISCRIMINATORS`), for the optional adversarial loss:
``"patch"`` (MONAI's PatchDiscriminator).

Example:
    >>> from medsat_sr.models import build_model
    >>> net = build_model("edsr", spatial_dims=3, in_channels=1, scale=(1, 1, 4))
    >>> net.receptive_field, net.config["name"]
    (13, 'edsr')

Common arguments and behaviour are documented in
:mod:`medsat_sr.models.base`; finetuning helpers in
:mod:`medsat_sr.models.finetune`.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from medsat_sr.errors import ModelError
from medsat_sr.models.base import SRModel
from medsat_sr.models.dcsrn import DCSRN
from medsat_sr.models.discriminator import PatchDiscriminator
from medsat_sr.models.edsr import EDSR
from medsat_sr.models.finetune import adapt_channels, freeze_blocks, freeze_body, unfreeze
from medsat_sr.models.guided import GuidedSR, unguided
from medsat_sr.models.rcan import RCAN
from medsat_sr.models.srresnet import SRResNet
from medsat_sr.models.upsample import voxel_shuffle

__all__ = [
    "MODELS",
    "DISCRIMINATORS",
    "build_model",
    "build_discriminator",
    "SRModel",
    "EDSR",
    "RCAN",
    "SRResNet",
    "DCSRN",
    "GuidedSR",
    "PatchDiscriminator",
    "voxel_shuffle",
    "freeze_blocks",
    "freeze_body",
    "unfreeze",
    "adapt_channels",
]

#: Generator architectures by name. Each value takes keyword arguments only.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "srresnet": SRResNet,
    "edsr": EDSR,
    "rcan": RCAN,
    "dcsrn": DCSRN,
    "guided": GuidedSR,
    "unguided": unguided,
}

#: Discriminators for the adversarial option, by name.
DISCRIMINATORS: dict[str, Callable[..., nn.Module]] = {
    "patch": PatchDiscriminator,
}


def _build(
    table: Mapping[str, Callable[..., nn.Module]], kind: str, name: Any, kwargs: dict[str, Any]
) -> nn.Module:
    if not isinstance(name, str) or name not in table:
        hint = ""
        if isinstance(name, str):
            close = difflib.get_close_matches(name.lower(), list(table), n=1, cutoff=0.5)
            if close:
                hint = f" (did you mean {close[0]!r}?)"
        raise ModelError(f"unknown {kind} {name!r}{hint}; available: {sorted(table)}")
    factory = table[name]
    params = inspect.signature(factory).parameters
    accepted = [p for p in params if params[p].kind is not inspect.Parameter.VAR_KEYWORD]
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in kwargs if k not in accepted]
        if unknown:
            parts = []
            for k in unknown:
                close = difflib.get_close_matches(k, accepted, n=1, cutoff=0.6)
                parts.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ModelError(
                f"{kind} {name!r} got unexpected argument(s) {', '.join(parts)}; "
                f"accepted: {accepted}"
            )
    missing = [
        p
        for p, spec in params.items()
        if spec.default is inspect.Parameter.empty
        and spec.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and p not in kwargs
    ]
    if missing:
        raise ModelError(f"{kind} {name!r} needs argument(s) {missing}; accepted: {accepted}")
    return factory(**kwargs)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a generator from :data:`MODELS` by name.

    Args:
        name: a key of :data:`MODELS`.
        **kwargs: the architecture's keyword arguments (``spatial_dims``,
            ``in_channels`` and ``scale`` are required for every generator).

    Returns:
        The model, with ``config``, ``receptive_field`` and ``global_context``.

    Raises:
        ModelError: unknown name (with a did-you-mean hint), an unknown or
            missing argument (naming it and the accepted ones), or an
            invalid value.
    """
    return _build(MODELS, "model", name, kwargs)


def build_discriminator(name: str = "patch", **kwargs: Any) -> nn.Module:
    """Build a discriminator from :data:`DISCRIMINATORS` by name.

    Raises:
        ModelError: as :func:`build_model`.
    """
    return _build(DISCRIMINATORS, "discriminator", name, kwargs)
