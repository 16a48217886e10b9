"""Batched data augmentation in torch, so that it runs where the batch is (CPU or GPU).

Geometric changes (rotation, scaling, translation) move images and masks together;
intensity changes (gamma, contrast, noise) touch the images only. There are no
left-right flips: in an apical view they swap the septum and the lateral wall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random changes; each sample draws its own values uniformly.

    Attributes
    ----------
    rotate_deg : float
        Rotation within +-this many degrees about the image centre.
    scale : float
        Zoom factor within [1 - scale, 1 + scale].
    translate : float
        Shift within +-this fraction of the image size, per axis.
    gamma : float
        Gamma exponent exp(u), u within +-this.
    contrast : float
        Contrast factor within [1 - contrast, 1 + contrast] about the image mean.
    noise : float
        Gaussian noise with a standard deviation up to this (images scaled to 0-1).
    """

    rotate_deg: float = 10.0
    scale: float = 0.1
    translate: float = 0.05
    gamma: float = 0.3
    contrast: float = 0.2
    noise: float = 0.03


def augment(
    images: torch.Tensor,
    masks: torch.Tensor,
    generator: torch.Generator,
    settings: Augmentation = Augmentation(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply random changes to a batch.

    Parameters
    ----------
    images : Tensor, shape (B, 1, H, W), float in [0, 1]
    masks : Tensor, shape (B, H, W), int64 labels
    generator : torch.Generator
        A CPU generator: the random values are drawn on the CPU (a few per sample, and
        the noise) so that a seed gives the same batch on every device.
    settings : Augmentation

    Returns
    -------
    images : Tensor, shape (B, 1, H, W)
    masks : Tensor, shape (B, H, W)
    """
    b, device = images.shape[0], images.device

    def uniform(half: float, size: tuple[int, ...] = ()) -> torch.Tensor:
        u = torch.rand((b, *size), generator=generator, dtype=torch.float32)
        return ((2 * u - 1) * half).to(device)

    angle = uniform(math.radians(settings.rotate_deg))
    zoom = 1 + uniform(settings.scale)
    shift = uniform(2 * settings.translate, (2,))
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [
            torch.stack([cos, -sin, shift[:, 0]], 1),
            torch.stack([sin, cos, shift[:, 1]], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", align_corners=False)
    labels = masks[:, None].to(images.dtype)
    masks = F.grid_sample(labels, grid, mode="nearest", align_corners=False)[:, 0]
    masks = masks.round().long()

    gamma = torch.exp(uniform(settings.gamma)).view(b, 1, 1, 1)
    images = images.clamp(0, 1) ** gamma
    factor = (1 + uniform(settings.contrast)).view(b, 1, 1, 1)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * factor + mean
    sigma = (uniform(settings.noise / 2) + settings.noise / 2).view(b, 1, 1, 1)
    noise = torch.randn(images.shape, generator=generator, dtype=torch.float32)
    images = images + sigma * noise.to(device)
    return images.clamp(0, 1), masks
