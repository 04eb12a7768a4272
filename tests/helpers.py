"""Small models and data made inside the tests (no downloads, no ../shared), and the CLI run in-process."""

import contextlib
import io
from dataclasses import dataclass

import torch
from torch import nn

from edgeshrink.artifact import Artifact
from edgeshrink.recipes import smallest_settings as smallest  # noqa: F401  (the tests' name)
from edgeshrink.stages.base import StageContext, apply_stage, parse_stage
from edgeshrink.tasks.data import TensorLoader


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc1 = nn.Linear(4 * 8 * 8, 32)
        self.fc2 = nn.Linear(32, 3)

    def forward(self, x):
        x = torch.relu(self.conv(x)).flatten(1)
        return self.fc2(torch.relu(self.fc1(x)))


class GramNet(nn.Module):
    """A Gram matrix of two activations (a matmul through reshapes): torch-pruning follows the channel indices
    of `stem` and `key` round a cycle, unbounded; `first` is coupled to `stem`'s inputs only."""

    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(1, 16, 3, padding=1)
        self.stem = nn.Conv2d(16, 16, 3, padding=1)
        self.key = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16 * 16, 4)

    def forward(self, x):
        h = torch.relu(self.stem(torch.relu(self.first(x))))
        return self.head((self.key(h).flatten(2) @ h.flatten(2).transpose(1, 2) / 64).flatten(1))


def blobs(n=192, seed=0):
    """Three learnable classes of 1x8x8 images."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    centers = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(99))
    inputs = centers[labels] + 0.5 * torch.randn(n, 1, 8, 8, generator=g)
    return inputs, labels


def loaders(batch_size=32):
    x, y = blobs()
    xv, yv = blobs(96, seed=1)
    return TensorLoader(x, y, batch_size, shuffle=True), TensorLoader(xv, yv, 96)


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str


def cli(*args) -> Completed:
    """Run the `edgeshrink` command line in this process (the real parser and error handling) and capture
    what it prints: as a subprocess would see it, without a new interpreter per call."""
    from edgeshrink.cli import run

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = run([str(a) for a in args])
    return Completed(status, out.getvalue(), err.getvalue())


def as_artifact(model: nn.Module, x: torch.Tensor, int8: bool) -> Artifact:
    """`model` as an artifact for `x`'s shape; with `int8`, through the default quantize stage calibrated on `x`."""
    art = Artifact(model.eval(), example_input=x[:1])
    if not int8:
        return art
    ctx = StageContext(None, None, example_input=x[:1], calibration=[(x, None)])
    return apply_stage(art, parse_stage({"type": "quantize"}), ctx)


class Focus(nn.Module):
    """YOLOv5's Focus: space-to-depth by four strided slices of a quantized map, concatenated, then a conv."""

    def __init__(self):
        super().__init__()
        self.stem, self.conv, self.head = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(32, 8, 3, padding=1), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = torch.cat([h[..., ::2, ::2], h[..., 1::2, ::2], h[..., ::2, 1::2], h[..., 1::2, 1::2]], 1)
        return self.head(torch.relu(self.conv(h)).mean((2, 3)))
