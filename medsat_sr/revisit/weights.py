"""The shipped weights of the learned fusion (safetensors + JSON), and loading any such checkpoint.

``medsat_sr/revisit/shipped/revisit_x3.{safetensors,json}`` was trained by
``benchmarks/train_revisit.py`` (:mod:`medsat_sr.revisit.train`) on simulated
revisits of real scenes; its JSON records the scenes, the settings and the
validation cPSNR of the network and of the classical fusions (validation
regions of the training scenes, never the benchmark's held-out scene).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medsat_sr.checkpoint import load_checkpoint
from medsat_sr.revisit.network import RevisitNet, build_revisit_net

__all__ = ["DEFAULT_WEIGHTS", "load_fusion"]

#: The shipped checkpoint's stem.
DEFAULT_WEIGHTS: Path = Path(__file__).resolve().parent / "shipped" / "revisit_x3"


def load_fusion(path: str | os.PathLike[str] | None = None, device: str = "cpu") -> tuple[RevisitNet, dict[str, Any]]:
    """Load a fusion checkpoint (default: the shipped one); never unpickles.

    Returns:
        ``(network in eval mode, metadata)``.

    Raises:
        ModelError: not a fusion network, or weights that do not match.
        DataError: a missing file.
    """
    model, meta = load_checkpoint(DEFAULT_WEIGHTS if path is None else path, device=device, build=build_revisit_net)
    return model, meta  # type: ignore[return-value]
