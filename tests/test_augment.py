"""Random shift augmentation (`TrainConfig.shift`): each image is a translation of itself, edges replicated."""

import numpy as np
import torch
from torch import nn

from edgeshrink.augment import random_shift
from edgeshrink.tasks.data import TensorLoader
from edgeshrink.train import DistillConfig, Progress, TrainConfig, fit


def translations(image: np.ndarray, shift: int) -> dict[tuple[int, int], np.ndarray]:
    """Every translation of a (C, H, W) image by (dy, dx) in [-shift, shift]^2 with its edge pixels copied into
    the uncovered border, written with numpy's edge padding: output pixel (i, j) is input pixel
    (clip(i - dy), clip(j - dx))."""
    _, height, width = image.shape
    padded = np.pad(image, ((0, 0), (shift, shift), (shift, shift)), mode="edge")
    return {
        (dy, dx): padded[:, shift - dy : shift - dy + height, shift - dx : shift - dx + width]
        for dy in range(-shift, shift + 1)
        for dx in range(-shift, shift + 1)
    }


def offsets(before: torch.Tensor, after: torch.Tensor, shift: int) -> list[tuple[int, int]]:
    """The translation of each image (random pixel values, so exactly one matches)."""
    found = []
    for x, y in zip(before.numpy(), after.numpy(), strict=True):
        matches = [k for k, moved in translations(x, shift).items() if np.array_equal(moved, y)]
        assert len(matches) == 1, "a shifted image must be exactly one zero-filled translation of its input"
        found += matches
    return found


def test_every_image_is_one_translation_and_every_offset_occurs():
    torch.manual_seed(0)
    images = torch.rand(400, 2, 7, 9)  # distinct values: exactly one translation matches
    moved = random_shift(images, 2)
    seen = offsets(images, moved, 2)
    assert set(seen) == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}
    assert abs(np.mean([dy for dy, _ in seen])) < 0.3 and abs(np.mean([dx for _, dx in seen])) < 0.3
    assert torch.equal(random_shift(images, 0), images)


class RecordingTeacher(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.inner(x)


def image_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_distillation_with_shift_shows_the_teacher_the_shifted_images():
    torch.manual_seed(0)
    images, labels = torch.rand(64, 1, 6, 6), torch.randint(0, 3, (64,))
    teacher = RecordingTeacher(image_net())
    cfg = TrainConfig(epochs=1, lr=1e-3, shift=1, distill=DistillConfig())
    fit(image_net(), TensorLoader(images, labels, 16), cfg, progress=Progress(False), teacher=teacher)
    seen = torch.cat(teacher.seen)  # unshuffled loader: the batches come in the order of `images`
    assert len(seen) == len(images)  # per batch, not precomputed once on the unshifted images
    moves = offsets(images, seen.contiguous(), 1)
    assert sum(move != (0, 0) for move in moves) > len(images) / 2


def test_inputs_that_are_not_images_train_unshifted(capsys):
    inputs, labels = torch.randn(64, 12), torch.randint(0, 3, (64,))
    states = []
    for shift in (0, 3):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(12, 3))
        fit(model, TensorLoader(inputs, labels, 16, shuffle=True), TrainConfig(epochs=2, shift=shift))
        states.append(model.state_dict())
    for a, b in zip(states[0].values(), states[1].values(), strict=True):
        assert torch.equal(a, b)
    assert "not images" in capsys.readouterr().err
