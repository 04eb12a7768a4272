"""Training-time augmentation the fine-tunes of a recipe can ask for (`TrainConfig.shift`).

Random translation is the augmentation small image classifiers (MNIST LeNets, keyword-spotting
spectrograms) are trained with: each image moves by up to `shift` pixels along each axis, the uncovered
border filled with copies of the image's edge pixels (the background of normalised images is not zero),
drawn anew for every image at every step from torch's global generator (so a seeded run repeats).
"""

from __future__ import annotations

import torch


def is_image_batch(inputs: torch.Tensor) -> bool:
    """A batch of images: (N, C, H, W) floating point."""
    return inputs.dim() == 4 and inputs.is_floating_point()


def random_shift(inputs: torch.Tensor, shift: int) -> torch.Tensor:
    """`inputs` (N, C, H, W) with each image translated by a random (dy, dx) in [-shift, shift]^2, edges
    replicated into the uncovered border."""
    if shift <= 0:
        return inputs
    n, channels, height, width = inputs.shape
    padded = torch.nn.functional.pad(inputs, (shift, shift, shift, shift), mode="replicate")
    dy = torch.randint(0, 2 * shift + 1, (n,))
    dx = torch.randint(0, 2 * shift + 1, (n,))
    rows = (dy[:, None] + torch.arange(height))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(width))[:, None, None, :]
    images = torch.arange(n)[:, None, None, None]
    planes = torch.arange(channels)[None, :, None, None]
    return padded[images, planes, rows, cols]
