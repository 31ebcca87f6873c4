"""The learned fusion of a revisit stack: per-frame encoder, masked attention over frames, residual decoder.

The network works on the refined grid, after registration: it receives the
aligned stack of :func:`medsat_sr.revisit.classical.aligned_stack` (every
frame warped by Keys cubic onto the output grid with its estimated sub-pixel
shift), the frames' clear masks, and the masked median of the stack (the
base). This is the HighRes-net / RAMS idea (Deudon et al. 2020; Salvetti et
al. 2020) with the registration done explicitly, so that any number of
frames, in any order, with any masks, can be fused:

1. each frame is encoded with its mask, the base and their difference
   (shared weights; a constant channel ``1 / scale`` lets one network serve
   x2 and x3);
2. a score per frame and pixel gives attention weights by a softmax over the
   frames whose pixel is clear (clouded frames get weight 0, so they never
   enter the result);
3. the attention-weighted features and image, with the base, are decoded to
   a residual that is added to the base.

Inputs are normalised per stack and band by the caller
(:mod:`medsat_sr.revisit.fuse`): one band at a time, so a network trained on
single bands applies to any band count.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medsat_sr.errors import ModelError

__all__ = ["RevisitNet", "build_revisit_net", "ARCHITECTURE"]

#: The architecture's name in checkpoints.
ARCHITECTURE = "revisit_attention"

#: Large negative score for masked frames (softmax weight 0 without NaN).
_MASKED = -1e4


class _ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class RevisitNet(nn.Module):
    """Fuse ``K`` aligned frames with masks into one image (see the module docstring).

    Args:
        features: channels of the per-frame encoder.
        fuse_features: channels of the decoder.
        enc_blocks: residual blocks of the encoder.
        dec_blocks: residual blocks of the decoder.
    """

    def __init__(self, features: int = 16, fuse_features: int = 32, enc_blocks: int = 1, dec_blocks: int = 3) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "name": ARCHITECTURE,
            "kwargs": {"features": features, "fuse_features": fuse_features, "enc_blocks": enc_blocks, "dec_blocks": dec_blocks},
        }
        self.encoder = nn.Sequential(
            nn.Conv2d(5, features, 3, padding=1), nn.ReLU(inplace=True), *[_ResBlock(features) for _ in range(enc_blocks)]
        )
        self.score = nn.Conv2d(features, 1, 3, padding=1)
        self.decoder = nn.Sequential(
            nn.Conv2d(features + 2, fuse_features, 3, padding=1),
            nn.ReLU(inplace=True),
            *[_ResBlock(fuse_features) for _ in range(dec_blocks)],
            nn.Conv2d(fuse_features, 1, 3, padding=1),
        )
        #: Pixels of context each output pixel depends on (per side), for tiling with a halo.
        self.receptive_field = 1 + 2 * enc_blocks + 1 + 1 + 2 * dec_blocks + 1

    def forward(self, stack: torch.Tensor, masks: torch.Tensor, base: torch.Tensor, scale: float) -> torch.Tensor:
        """Fuse.

        Args:
            stack: ``(B, K, H, W)`` aligned frames (normalised, one band).
            masks: ``(B, K, H, W)`` clear masks (bool or 0/1).
            base: ``(B, 1, H, W)`` the masked median of the stack.
            scale: the refinement factor (2 or 3 were trained).

        Returns:
            ``(B, 1, H, W)`` the fused image.
        """
        b, k, h, w = stack.shape
        m = masks.to(stack.dtype)
        x = stack * m + base * (1 - m)  # masked values never reach the encoder
        inv = torch.full_like(x, 1.0 / float(scale))
        inp = torch.stack([x, m, base.expand_as(x), x - base, inv], dim=2).reshape(b * k, 5, h, w)
        feats = self.encoder(inp)
        score = self.score(feats).reshape(b, k, h, w).float()
        score = torch.where(m > 0, score, torch.full_like(score, _MASKED))
        att = torch.softmax(score, dim=1) * (m.sum(dim=1, keepdim=True) > 0).to(score.dtype)
        att = att.to(feats.dtype)
        fused = (feats.reshape(b, k, -1, h, w) * att[:, :, None]).sum(dim=1)
        img = (x * att).sum(dim=1, keepdim=True)
        res = self.decoder(torch.cat([fused, img, base], dim=1))
        return base + res.to(base.dtype)


def build_revisit_net(name: str = ARCHITECTURE, **kwargs: Any) -> RevisitNet:
    """The factory :func:`medsat_sr.checkpoint.load_checkpoint` rebuilds the network with."""
    if name != ARCHITECTURE:
        raise ModelError(f"not a revisit fusion network: architecture {name!r} (expected {ARCHITECTURE!r})")
    return RevisitNet(**kwargs)
