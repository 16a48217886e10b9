"""Batched augmentation: geometry moves images and masks together, seeded, no flips."""

from __future__ import annotations

import torch
from conftest import draw_heart

from echoscale.augment import Augmentation, augment


def _batch(n: int = 6):
    image, mask = draw_heart((64, 48))
    images = torch.from_numpy(image / 255).float()[None, None].repeat(n, 1, 1, 1)
    masks = torch.from_numpy(mask).long()[None].repeat(n, 1, 1)
    return images, masks


def test_the_same_generator_seed_gives_the_same_batch():
    images, masks = _batch()
    a = augment(images, masks, torch.Generator().manual_seed(3))
    b = augment(images, masks, torch.Generator().manual_seed(3))
    c = augment(images, masks, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_masks_keep_their_labels_and_follow_the_image_geometry():
    images, masks = _batch()
    geometry_only = Augmentation(gamma=0, contrast=0, noise=0)
    out_images, out_masks = augment(
        images, masks, torch.Generator().manual_seed(1), geometry_only
    )
    assert set(out_masks.unique().tolist()) <= {0, 1, 2, 3}
    # the bright myocardium in the image lies where the mask says myocardium
    bright = out_images[:, 0] > 150 / 255
    overlap = (bright & (out_masks == 2)).sum() / bright.sum()
    assert overlap > 0.9


def test_no_left_right_flip_moves_the_septum_across():
    images, masks = _batch(32)
    left = masks.clone()
    left[:, :, 24:] = 0  # keep only the left half of the labels
    _, out = augment(images, left, torch.Generator().manual_seed(0))
    cols = torch.nonzero(out > 0)[:, 2].float()
    assert cols.mean() < 24  # a flip would put about half the batch on the right
