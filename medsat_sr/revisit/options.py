"""The ``revisit:`` section of a job config: how a revisit stack is fused (declarations only).

A config with this section (``configs/revisit_x3.yaml``) sends
``medsat-sr upscale FRAME... -o OUT --config revisit_x3`` to the revisit
route (:mod:`medsat_sr.inference.route_revisit`). This module only declares
the options (pydantic and :mod:`medsat_sr._schema`), so that
:mod:`medsat_sr.config` (layer 1) can embed it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medsat_sr._schema import StrictModel

__all__ = ["RevisitOptions", "FUSION_METHODS"]

#: The fusion methods (``--method`` and ``revisit.method``); ``learned`` needs the network.
FUSION_METHODS = ("learned", "median", "mean", "shift_and_add", "best_frame")


class RevisitOptions(StrictModel):
    """How the frames of one scene are selected, registered and fused.

    Attributes:
        method: ``learned`` (the shipped fusion network, checked against the
            best classical fusion on a simulated revisit of the input's own
            scene, with its real masks, and replaced by it when it does not
            win), ``median``, ``mean``, ``shift_and_add`` or ``best_frame``
            (the clearest frame, GDAL cubic).
        dates: keep the frames dated inside ``START:END`` (``YYYY-MM-DD`` or a
            yearly season ``MM-DD``; either side may be empty).
        min_clear: drop frames with fewer clear pixels than this fraction.
        max_frames: keep at most this many frames, the clearest first.
        registration: estimate sub-pixel shifts between frames (off: frames are
            taken as exactly on the nominal grid).
        max_shift: the largest credible shift in input pixels; a larger
            estimate counts as a failed registration (shift 0).
        harmonise: remove each frame's brightness offset to the clearest frame.
        weights: a fusion checkpoint (safetensors + JSON) instead of the shipped one.
        check: run the learned-or-classical check (``learned`` only).
        min_gain_db: how much cPSNR the network must win by in that check.
        tile: output tile size of the network, in output pixels.
    """

    method: Literal["learned", "median", "mean", "shift_and_add", "best_frame"] = "learned"
    dates: str | None = None
    min_clear: float = Field(0.05, ge=0, le=1)
    max_frames: int | None = Field(None, ge=1, le=1000)
    registration: bool = True
    max_shift: float = Field(1.5, gt=0, le=10)
    harmonise: bool = True
    weights: str | None = None
    check: bool = True
    min_gain_db: float = Field(0.0, ge=-10, le=10)
    tile: int = Field(384, ge=32, le=4096)
