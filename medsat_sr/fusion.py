"""Fusion: weighted ensembles, self-ensemble (TTA) and the disagreement map.

An :class:`Ensemble` holds one or more :class:`Member` networks (each with its
own normaliser, so checkpoints trained with different statistics can be
fused) and a list of :class:`Transform` s (the self-ensemble). For an input
window in *physical* units it returns the weighted mean of all
``members x transforms`` predictions, and optionally their weighted variance
(the per-voxel disagreement; its square root is the ``--uncertainty`` map),
both in physical units::

    mean = sum_k w_k p_k          var = sum_k w_k (p_k - mean)^2      (sum_k w_k = 1)

computed in one pass with West's weighted update, which is exact (0) for
identical members and does not cancel catastrophically in float32.

**Self-ensemble.** :func:`tta_transforms` lists the flips and 90° rotations
that the scale allows: any axis may be flipped (the field-of-view keeping grid
of :mod:`medsat_sr.geometry` is symmetric under flips), but two axes may only
be exchanged (a rotation by 90° is an exchange plus a flip) when their scale
factors are equal. The transforms are signed axis permutations; the first
eight are the dihedral group D4 in the plane of the first pair of axes with
equal factors (the 8-member self-ensemble of EDSR for 2D images), then flips
of the other axes. For ``(1, 1, 4)`` that is D4 in-plane with the
through-plane axis never moved; for 2D ``(4, 1)`` (slice nets) only the 4
flips. ``tta=True`` uses at most :data:`DEFAULT_TTA_MEMBERS` transforms.

**Weights.** Given (normalised to sum 1), equal, or fitted on a validation
split with :func:`fit_weights`: ``"lstsq"`` (least squares constrained to a
convex combination, non-negative and summing to 1, so the ensemble stays in
the members' range) or ``"softmax"`` (``w ∝ exp(PSNR / T)``, ``T`` in dB).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from medsat_sr.errors import ConfigError, ModelError

__all__ = [
    "Member",
    "Transform",
    "Ensemble",
    "tta_transforms",
    "fit_weights",
    "normalise_weights",
    "DEFAULT_TTA_MEMBERS",
]

#: Transforms used by ``tta=True`` (the D4 group of a plane).
DEFAULT_TTA_MEMBERS = 8


# =============================================================== transforms
@dataclass(frozen=True)
class Transform:
    """A signed permutation of the spatial axes: permute, then flip.

    Attributes:
        perm: new spatial axis ``i`` is old axis ``perm[i]``.
        flips: spatial axes (after permuting) that are reversed.
    """

    perm: tuple[int, ...]
    flips: tuple[int, ...] = ()

    @property
    def is_identity(self) -> bool:
        return not self.flips and self.perm == tuple(range(len(self.perm)))

    def _dims(self, x: torch.Tensor, axes: Sequence[int]) -> list[int]:
        off = x.ndim - len(self.perm)
        return [off + a for a in axes]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Transform the trailing spatial axes of ``x``."""
        if self.is_identity:
            return x
        off = x.ndim - len(self.perm)
        y = x.permute(*range(off), *[off + p for p in self.perm]) if self.perm != tuple(range(len(self.perm))) else x
        return y.flip(self._dims(x, self.flips)) if self.flips else y

    def invert(self, y: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`apply`."""
        if self.is_identity:
            return y
        off = y.ndim - len(self.perm)
        x = y.flip(self._dims(y, self.flips)) if self.flips else y
        if self.perm != tuple(range(len(self.perm))):
            inv = [0] * len(self.perm)
            for i, p in enumerate(self.perm):
                inv[p] = i
            x = x.permute(*range(off), *[off + p for p in inv])
        return x

    def size(self, size: Sequence[int]) -> tuple[int, ...]:
        """A spatial size after the permutation."""
        return tuple(int(size[p]) for p in self.perm)

    def describe(self) -> str:
        parts = []
        if self.perm != tuple(range(len(self.perm))):
            parts.append("perm" + "".join(str(p) for p in self.perm))
        if self.flips:
            parts.append("flip" + "".join(str(a) for a in self.flips))
        return "+".join(parts) or "identity"


def tta_transforms(scale: Sequence[float], max_members: int | None = DEFAULT_TTA_MEMBERS) -> list[Transform]:
    """The self-ensemble transforms that a per-axis ``scale`` allows (identity first).

    Args:
        scale: one factor per spatial axis of the network's input.
        max_members: keep at most this many (``None``: the whole group).

    Returns:
        Distinct :class:`Transform` s, identity first, D4 of the first
        equal-factor plane next, then flips of the other axes.
    """
    s = [float(v) for v in scale]
    nd = len(s)
    if nd < 1:
        raise ConfigError("tta_transforms needs at least one spatial axis")
    classes: dict[float, list[int]] = {}
    for ax, f in enumerate(s):
        key = next((k for k in classes if abs(k - f) <= 1e-6 * max(1.0, abs(f))), f)
        classes.setdefault(key, []).append(ax)
    pair = next((tuple(v[:2]) for v in classes.values() if len(v) >= 2), None)
    # all permutations that only exchange axes of equal factor
    perms: list[tuple[int, ...]] = []
    for p in itertools.permutations(range(nd)):
        if all(abs(s[p[i]] - s[i]) <= 1e-6 * max(1.0, abs(s[i])) for i in range(nd)):
            perms.append(tuple(p))
    flips_all = [tuple(c) for r in range(nd + 1) for c in itertools.combinations(range(nd), r)]
    group = [Transform(p, f) for p in perms for f in flips_all]
    primary = set(pair) if pair else set()

    def key(t: Transform) -> tuple[int, int, int]:
        outside = sum(1 for a in t.flips if a not in primary) + sum(
            1 for i, p in enumerate(t.perm) if p != i and i not in primary
        )
        moved = sum(1 for i, p in enumerate(t.perm) if p != i) + len(t.flips)
        return (0 if t.is_identity else 1, outside, moved)

    group.sort(key=key)
    if max_members is not None:
        if max_members < 1:
            raise ConfigError(f"max_members must be >= 1, got {max_members}")
        group = group[:max_members]
    return group


# =============================================================== weights
def normalise_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """Weights that sum to 1 (equal when ``None``).

    Raises:
        ConfigError: wrong count, negative or non-finite values, or all zero.
    """
    if weights is None:
        return [1.0 / n] * n
    w = [float(v) for v in weights]
    if len(w) != n:
        raise ConfigError(f"{len(w)} weights given for {n} models; give one weight per model")
    if any(not math.isfinite(v) or v < 0 for v in w):
        raise ConfigError(f"weights must be finite and >= 0, got {w}")
    total = sum(w)
    if total <= 0:
        raise ConfigError(f"weights must not all be zero, got {w}")
    return [v / total for v in w]


def fit_weights(
    predictions: Sequence[torch.Tensor | np.ndarray],
    target: torch.Tensor | np.ndarray,
    *,
    method: str = "lstsq",
    mask: torch.Tensor | np.ndarray | None = None,
    data_range: float | None = None,
    temperature: float = 1.0,
) -> list[float]:
    """Ensemble weights fitted on a validation split.

    Args:
        predictions: each model's prediction of ``target`` (same shape).
        target: the held-out reference.
        method: ``"lstsq"``: minimise ``||sum_k w_k p_k - t||^2`` over convex
            weights (``w >= 0``, ``sum w = 1``; non-negative least squares
            with the sum constraint as a heavily weighted extra equation);
            ``"softmax"``: ``w_k ∝ exp(PSNR_k / temperature)``.
        mask: valid pixels (True), broadcasting to ``target``.
        data_range: PSNR data range for ``"softmax"`` (default: the
            target's max - min on the valid pixels).
        temperature: softmax temperature in dB (> 0).

    Returns:
        One weight per prediction, summing to 1.

    Raises:
        ConfigError: unknown method, shape mismatch, no valid pixel, or a bad temperature.
    """
    if method not in ("lstsq", "softmax"):
        raise ConfigError(f"unknown weight fitting method {method!r}; expected 'lstsq' or 'softmax'")
    if not predictions:
        raise ConfigError("fit_weights needs at least one prediction")
    t = np.asarray(torch.as_tensor(target).detach().cpu().double().numpy())
    ps = [np.asarray(torch.as_tensor(p).detach().cpu().double().numpy()) for p in predictions]
    for i, p in enumerate(ps):
        if p.shape != t.shape:
            raise ConfigError(f"prediction {i} has shape {p.shape}, the target {t.shape}")
    ok = np.isfinite(t) & np.logical_and.reduce([np.isfinite(p) for p in ps])
    if mask is not None:
        ok &= np.broadcast_to(np.asarray(torch.as_tensor(mask).cpu().numpy(), dtype=bool), t.shape)
    if not ok.any():
        raise ConfigError("fit_weights: no valid pixel to fit on")
    tv = t[ok]
    pv = np.stack([p[ok] for p in ps], axis=1)
    n = len(ps)
    if n == 1:
        return [1.0]
    if method == "lstsq":
        from scipy.optimize import nnls

        # sample at most ~2M pixels: the fit has n unknowns
        if tv.size > 2_000_000:
            step = int(math.ceil(tv.size / 2_000_000))
            tv, pv = tv[::step], pv[::step]
        lam = 1e3 * max(1.0, float(np.sqrt((pv**2).mean())) * math.sqrt(tv.size))
        a = np.vstack([pv, np.full((1, n), lam)])
        b = np.concatenate([tv, [lam]])
        w, _ = nnls(a, b)
        return normalise_weights(w.tolist() if w.sum() > 0 else None, n)
    if method == "softmax":
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        rng = float(data_range) if data_range is not None else float(tv.max() - tv.min()) or 1.0
        psnrs = []
        for k in range(n):
            mse = float(np.mean((pv[:, k] - tv) ** 2))
            psnrs.append(100.0 if mse == 0 else 10.0 * math.log10(rng * rng / mse))
        return softmax_weights(psnrs, temperature)
    raise ConfigError(f"unknown weight fitting method {method!r}; expected 'lstsq' or 'softmax'")


def softmax_weights(psnrs: Sequence[float], temperature: float = 1.0) -> list[float]:
    """``w_k ∝ exp(PSNR_k / T)`` (``T`` in dB)."""
    p = np.asarray([float(v) for v in psnrs])
    z = np.exp((p - p.max()) / float(temperature))
    return (z / z.sum()).tolist()


# =============================================================== members and the ensemble
@dataclass
class Member:
    """One network of an ensemble.

    Attributes:
        model: the generator (eval mode). Guided models are called
            ``model(coarse, guide)``, the others ``model(x, output_size=...)``.
        normaliser: maps the input channels between physical and network
            units (``forward``/``inverse`` with ``channel_dim``); ``None``:
            the network works in physical units.
        guide_normaliser: the same for the guide bands of a guided model.
        weight: ensemble weight (normalised by the ensemble).
        name: for the record (checkpoint path or class name).
        info: metadata for the trust record (hash, architecture, metrics).
        per_channel: a one-channel network applied to each channel of a
            multi-channel input on its own (the volumes of a 4D series), as
            many planes or windows per forward pass as one channel has.
    """

    model: nn.Module
    normaliser: Any = None
    guide_normaliser: Any = None
    weight: float = 1.0
    name: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    per_channel: bool = False

    @property
    def guided(self) -> bool:
        return bool(getattr(self.model, "use_guide", False))

    @property
    def scale(self) -> tuple[float, ...]:
        return tuple(float(v) for v in getattr(self.model, "scale", ()))


def _memory_format(ndim: int) -> torch.memory_format:
    return torch.channels_last if ndim == 4 else torch.channels_last_3d


class Ensemble:
    """Weighted ensemble of members x self-ensemble transforms, in physical units.

    Args:
        members: the networks (at least one).
        transforms: self-ensemble transforms (default: identity only).
        precision: ``"fp32"`` or ``"bf16"`` (``torch.autocast("cpu",
            dtype=torch.bfloat16)`` and channels-last inputs on CPU). On the
            CPU, 2D networks run channels-last in fp32 too (oneDNN ran the
            thick-slice net faster so on an AVX2 EPYC); 3D ones stay
            contiguous in fp32 (channels-last-3d was slower there).
        device: where the networks run.
        uncertainty: also return the weighted variance across predictions.

    Raises:
        ModelError: no members, or members of different spatial dimensions.
        ConfigError: an unknown precision.
    """

    def __init__(
        self,
        members: Sequence[Member],
        *,
        transforms: Sequence[Transform] | None = None,
        precision: str = "fp32",
        device: str | torch.device = "cpu",
        uncertainty: bool = False,
    ) -> None:
        if not members:
            raise ModelError("an ensemble needs at least one model")
        if precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        dims = {int(getattr(m.model, "spatial_dims", 0)) for m in members}
        if len(dims) != 1:
            raise ModelError(f"ensemble members have different spatial_dims {sorted(dims)}")
        self.members = list(members)
        self.spatial_dims = dims.pop()
        self.weights = normalise_weights([m.weight for m in members], len(members))
        self.transforms = list(transforms) if transforms else [Transform(tuple(range(self.spatial_dims)))]
        self.precision = precision
        self.device = torch.device(device)
        self.uncertainty = bool(uncertainty)
        self.channels_last = self.device.type == "cpu" and (self.precision == "bf16" or self.spatial_dims == 2)
        for m in self.members:
            m.model.eval()
            if self.channels_last:
                m.model.to(memory_format=_memory_format(self.spatial_dims + 2))

    @property
    def n_predictions(self) -> int:
        return len(self.members) * len(self.transforms)

    @property
    def guided(self) -> bool:
        return any(m.guided for m in self.members)

    def _run(self, member: Member, x: torch.Tensor, guide: torch.Tensor | None, size: tuple[int, ...]) -> torch.Tensor:
        if member.per_channel and not member.guided and x.shape[1] > 1:  # channels folded into the batch, in chunks
            b, c = int(x.shape[0]), int(x.shape[1])
            flat = x.reshape(b * c, 1, *x.shape[2:])
            ys = [self._run_one(member, flat[i : i + b], None, size) for i in range(0, b * c, b)]
            return torch.cat(ys).reshape(b, c, *ys[0].shape[2:])
        return self._run_one(member, x, guide, size)

    def _run_one(self, member: Member, x: torch.Tensor, guide: torch.Tensor | None, size: tuple[int, ...]) -> torch.Tensor:
        model = member.model
        if self.channels_last:
            fmt = _memory_format(x.ndim)
            x = x.contiguous(memory_format=fmt)
            if guide is not None:
                guide = guide.contiguous(memory_format=fmt)
        if self.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                y = model(x, guide) if member.guided else model(x, output_size=size)
        else:
            y = model(x, guide) if member.guided else model(x, output_size=size)
        return y.float().contiguous()

    def predict(
        self,
        x: torch.Tensor,
        output_size: Sequence[int],
        guide: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weighted mean (and variance) of all predictions for one batch.

        Args:
            x: ``(B, C, *spatial)`` physical values (float32, no NaN).
            output_size: the output spatial size.
            guide: ``(B, G, *output_size)`` physical guide bands (guided members).

        Returns:
            ``(mean, var)`` in physical units, float32 on the CPU; ``var`` is
            ``None`` unless ``uncertainty``.
        """
        size = tuple(int(v) for v in output_size)
        mean: torch.Tensor | None = None
        m2: torch.Tensor | None = None
        wsum = 0.0
        with torch.inference_mode():
            xd = x.to(self.device, torch.float32)
            gd = guide.to(self.device, torch.float32) if guide is not None else None
            for member, w_m in zip(self.members, self.weights):
                if member.guided and gd is None:
                    raise ModelError(f"{member.name or 'model'}: a guided model needs the guide bands")
                xn = member.normaliser.forward(xd, channel_dim=1) if member.normaliser is not None else xd
                gn = None
                if member.guided and gd is not None:
                    gn = member.guide_normaliser.forward(gd, channel_dim=1) if member.guide_normaliser is not None else gd
                w = w_m / len(self.transforms)
                for t in self.transforms:
                    y = self._run(member, t.apply(xn), t.apply(gn) if gn is not None else None, t.size(size))
                    y = t.invert(y)
                    if member.normaliser is not None:
                        y = member.normaliser.inverse(y, channel_dim=1)
                    y = y.float()
                    if w == 0.0:
                        continue
                    wsum += w
                    if mean is None:
                        single = self.n_predictions == 1
                        mean = y if single else y.clone()  # one prediction: no copy needed
                        m2 = torch.zeros_like(y) if self.uncertainty else None
                        continue
                    delta = y - mean
                    mean.add_(delta, alpha=w / wsum)
                    if m2 is not None:
                        m2.add_(delta * (y - mean), alpha=w)
        assert mean is not None
        var = None
        if m2 is not None:
            var = (m2 / wsum).clamp_min_(0.0).cpu()
        return mean.cpu(), var


def as_ensemble(model: Any, uncertainty: bool) -> Ensemble:
    """``model`` as an :class:`Ensemble`: an ensemble as it is, a member or a bare network as a one-member ensemble.

    Raises:
        ModelError: anything else.
    """
    if isinstance(model, Ensemble):
        return model
    if isinstance(model, Member):
        return Ensemble([model], uncertainty=uncertainty)
    if isinstance(model, nn.Module):
        return Ensemble([Member(model=model)], uncertainty=uncertainty)
    raise ModelError(f"expected a model or an Ensemble, got {type(model).__name__}")
