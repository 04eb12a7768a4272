"""Models whose inputs and outputs are not the digit images of the other sweeps, for
`unseen_inputs.py`: token ids (int64) into an Embedding, (N, T, F) feature sequences into a GRU, 1-D signals,
Conv3d clips, a regression head, a unit-norm embedding, and weight_norm in both of torch's forms. Each comes
with a synthetic task it can learn (no download) and says whether it is a classifier."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

N = 1024  # examples per task: 768 to train and calibrate on, 256 to validate


class Tokens(nn.Module):  # LongTensor ids in: a text or keyword classifier
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 32)
        self.enc = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, dropout=0.0)
        self.fc = nn.Linear(32, 4)

    def forward(self, ids):
        return self.fc(self.enc(self.emb(ids)).mean(1))


class Audio(nn.Module):  # (N, T, F) features: a keyword-spotting GRU
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(8, 24, batch_first=True)
        self.fc = nn.Linear(24, 4)

    def forward(self, x):
        return self.fc(self.gru(x)[0][:, -1])


class Signal(nn.Module):  # (N, 1, L): a 1-D CNN
    def __init__(self):
        super().__init__()
        self.c1, self.bn = nn.Conv1d(1, 16, 5, padding=2), nn.BatchNorm1d(16)
        self.c2, self.fc = nn.Conv1d(16, 32, 3, stride=2), nn.Linear(32, 4)

    def forward(self, x):
        return self.fc(F.relu(self.c2(F.relu(self.bn(self.c1(x))))).mean(2))


class Tabular(nn.Module):  # (N, 8) -> (N, 1): a regression head
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, x):
        return self.net(x)


class Embed(nn.Module):  # image -> a unit-norm 16-d embedding (trained on two of its dimensions)
    def __init__(self):
        super().__init__()
        self.c, self.c2 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32, 16)

    def forward(self, x):
        return F.normalize(self.fc(F.relu(self.c2(F.relu(self.c(x)))).mean((2, 3))), dim=1)


class WeightNormTCN(nn.Module):  # dilated Conv1d blocks with weight_norm (torch.nn.utils.parametrizations)
    hooked = False

    def __init__(self):
        super().__init__()
        norm = torch.nn.utils.weight_norm if self.hooked else torch.nn.utils.parametrizations.weight_norm
        self.c1 = norm(nn.Conv1d(1, 16, 3, padding=2, dilation=2))
        self.c2 = norm(nn.Conv1d(16, 16, 3, padding=4, dilation=4))
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = F.relu(self.c1(x))
        return self.fc((F.relu(self.c2(x)) + x).mean(2))


class HookedWeightNormTCN(WeightNormTCN):  # the older hook-based torch.nn.utils.weight_norm
    hooked = True


class Video(nn.Module):  # (N, 1, T, H, W): Conv3d
    def __init__(self):
        super().__init__()
        self.c, self.c2 = nn.Conv3d(1, 8, 3, padding=1), nn.Conv3d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(F.relu(self.c2(F.relu(self.c(x)))).mean((2, 3, 4)))


def _two_bits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a > 0).long() * 2 + (b > 0).long()


def _tokens(g):
    x = torch.randint(0, 50, (N, 12), generator=g)
    return x, (x % 4).mode(1).values


def _audio(g):
    x = torch.randn(N, 16, 8, generator=g)
    return x, _two_bits(x[:, :, :4].sum((1, 2)), x[:, -4:, 4:].sum((1, 2)))


def _signal(g):
    x = torch.randn(N, 1, 64, generator=g)
    return x, _two_bits(x[:, 0, :32].sum(1), x[:, 0, ::2].sum(1))


def _tabular(g):
    x = torch.randn(N, 8, generator=g)
    return x, x[:, :1] * 2 - x[:, 1:2] ** 2 + x[:, 2:3] * x[:, 3:4]


def _embed(g):
    x = torch.randn(N, 1, 8, 8, generator=g)
    return x, (x[:, 0, :4].sum((1, 2)) > 0).long()


def _video(g):
    x = torch.randn(N, 1, 4, 8, 8, generator=g)
    return x, _two_bits(x[:, 0, :2].sum((1, 2, 3)), x[:, 0, :, :4].sum((1, 2, 3)))


@dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]
    data: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]
    kind: str  # classifier | regression | embedding


MODELS: dict[str, Case] = {
    "tokens": Case(Tokens, _tokens, "classifier"),
    "audio-gru": Case(Audio, _audio, "classifier"),
    "signal-1d": Case(Signal, _signal, "classifier"),
    "video-3d": Case(Video, _video, "classifier"),
    "weight-norm": Case(WeightNormTCN, _signal, "classifier"),
    "weight-norm-hook": Case(HookedWeightNormTCN, _signal, "classifier"),
    "regression": Case(Tabular, _tabular, "regression"),
    "embedding": Case(Embed, _embed, "embedding"),
}


def loss(kind: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The task's own loss: cross-entropy, squared error, or cross-entropy on two embedding dimensions."""
    if kind == "regression":
        return F.mse_loss(out, y)
    return F.cross_entropy(out[:, :2] * 10 if kind == "embedding" else out, y)


def score(kind: str, out: torch.Tensor, y: torch.Tensor) -> float:
    """Higher is better, in points: top-1 for classifiers and embeddings, 100 minus the error in percent of the
    targets' variance for the regression head."""
    if kind == "regression":
        return 100.0 - 100.0 * float(F.mse_loss(out, y) / y.var())
    return 100.0 * float(((out[:, :2] if kind == "embedding" else out).argmax(1) == y).float().mean())
