"""Models written the way people write forwards, for `unseen_forwards.py`: the input's shape unpacked and used
(`B, N, C = x.shape`, `(C // heads) ** -0.5`, `x.numel() // x.size(0)`, `torch.arange(x.shape[1])`), the
textbook `x.view(x.size(0), -1)` flatten after a convolution on 1- and 3-channel images, chunked gates, einsum
attention, PReLU / ELU / Mish / Softplus / GroupNorm, upsampling with skip concatenation and a transposed
convolution, log-softmax outputs with functional dropout, and recurrent layers read by `out[:, -1]` and `h_n`.
Every one is a classifier on a synthetic task it can learn (no download)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from unseen_input_models import Case, N, _two_bits


class VitAttention(nn.Module):  # patches + timm-style attention written with the input's shape
    def __init__(self, dim: int = 16, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.patches = nn.Conv2d(3, dim, 2, 2)
        self.pos = nn.Parameter(torch.zeros(1, 16, dim))
        self.norm, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 4)

    def forward(self, x):
        x = self.patches(x)
        B, C, H, W = x.shape
        x = x.flatten(2).transpose(1, 2) + self.pos
        B, N, C = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * (C // self.heads) ** -0.5).softmax(dim=-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))
        return self.head(x.mean(1))


class ScaledByShape(nn.Module):  # q @ k^T / q.size(-1) ** 0.5 on image rows
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.head = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(64, 4)

    def forward(self, x):
        x = x.view(x.size(0), 8, 8)
        q, k, v = self.q(x), self.k(x), self.v(x)
        attn = torch.softmax(q @ k.transpose(1, 2) / (q.size(-1) ** 0.5), dim=-1)
        return self.head((attn @ v).reshape(x.shape[0], -1))


class PositionsFromShape(nn.Module):  # position ids from torch.arange(x.shape[1])
    def __init__(self):
        super().__init__()
        self.inp, self.pos = nn.Linear(8, 16), nn.Embedding(8, 16)
        self.fc, self.head = nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x):
        x = x.squeeze(1)
        h = self.inp(x) + self.pos(torch.arange(x.shape[1], device=x.device))
        return self.head(F.relu(self.fc(h)).mean(dim=1))


class ViewFlatten(nn.Module):  # the textbook flatten: h.view(h.size(0), -1) after a convolution
    def __init__(self, channels: int = 1):
        super().__init__()
        self.conv, self.conv2 = nn.Conv2d(channels, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(512, 4)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.conv(x)), 1)
        h = F.relu(self.conv2(h))
        return self.fc(h.view(h.size(0), -1))


class NumelEinsum(nn.Module):  # x.view(-1, x.numel() // x.size(0)), clamp, einsum attention, concat
    def __init__(self):
        super().__init__()
        self.c, self.q, self.k = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(8, 8), nn.Linear(8, 8)
        self.fc = nn.Linear(320, 4)

    def forward(self, x):
        h = self.c(x).clamp(min=0)
        h = h.reshape(-1, h.numel() // h.size(0))
        t = x.squeeze(1)
        a = torch.einsum("bqd,bkd->bqk", self.q(t), self.k(t)).softmax(-1)
        return self.fc(torch.cat([h, a.flatten(1)], 1))


class ChunkGate(nn.Module):  # a, b = h.chunk(2, 1); a * sigmoid(b); SE with mean((2, 3), keepdim=True)
    def __init__(self):
        super().__init__()
        self.c, self.c2 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.se1, self.se2, self.fc = nn.Conv2d(8, 2, 1), nn.Conv2d(2, 8, 1), nn.Linear(8, 4)

    def forward(self, x):
        a, b = self.c(x).chunk(2, dim=1)
        h = F.relu(self.c2(a * torch.sigmoid(b)))
        h = h * torch.sigmoid(self.se2(F.relu(self.se1(h.mean((2, 3), keepdim=True)))))
        return self.fc(h.sum(dim=(2, 3)) / (h.shape[2] * h.shape[3]))


class Activations(nn.Module):  # PReLU, GroupNorm, ELU, LeakyReLU, Mish, Softplus, Tanh
    def __init__(self):
        super().__init__()
        self.c1, self.p, self.gn = nn.Conv2d(1, 8, 3, padding=1), nn.PReLU(8), nn.GroupNorm(2, 8)
        self.c2, self.fc1, self.fc2 = nn.Conv2d(8, 8, 3, padding=1), nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x):
        h = F.elu(self.gn(self.p(self.c1(x))))
        h = F.mish(F.leaky_relu(self.c2(h), 0.1)).mean((2, 3))
        return self.fc2(torch.tanh(F.softplus(self.fc1(h))))


class UpsampleSkip(nn.Module):  # strided conv down, interpolate + ConvTranspose2d up, concat skip, PixelShuffle
    def __init__(self):
        super().__init__()
        self.d, self.u = nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.m, self.ps, self.shuf = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1), nn.PixelShuffle(2)
        self.fc = nn.Linear(4 * 16 * 16, 4)

    def forward(self, x):
        d = F.relu(self.d(x))
        up = F.interpolate(d, scale_factor=2, mode="nearest")[:, :4] + F.relu(self.u(d))
        return self.fc(self.shuf(self.ps(torch.cat([up, F.relu(self.m(x))], dim=1))).flatten(1))


class LogSoftmaxDropout(nn.Module):  # BatchNorm, Dropout2d, F.dropout(training=self.training), log-probabilities out
    def __init__(self):
        super().__init__()
        self.c, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.drop, self.fc = nn.Dropout2d(0.1), nn.Linear(256, 4)

    def forward(self, x):
        h = self.drop(F.relu(self.bn(self.c(x))))
        return F.log_softmax(self.fc(F.dropout(h.flatten(1), 0.2, training=self.training)), dim=1)


class RecurrentLast(nn.Module):  # LSTM over image rows, a bidirectional GRU, out[:, -1] and h_n
    def __init__(self):
        super().__init__()
        self.lstm, self.gru = nn.LSTM(8, 16, batch_first=True), nn.GRU(16, 8, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(32, 4)

    def forward(self, x):
        out, (h, c) = self.lstm(x.squeeze(1))
        o2, hn = self.gru(out)
        return self.fc(torch.cat([o2[:, -1, :], torch.cat([hn[0], hn[1]], -1)], -1))


def _images(channels: int):
    def data(g):
        x = torch.randn(N, channels, 8, 8, generator=g)
        return x, _two_bits(x[:, 0, :4].sum((1, 2)), x[:, -1, :, 4:].sum((1, 2)))

    return data


MODELS: dict[str, Case] = {
    "vit-attention": Case(VitAttention, _images(3), "classifier"),
    "scaled-by-shape": Case(ScaledByShape, _images(1), "classifier"),
    "positions-from-shape": Case(PositionsFromShape, _images(1), "classifier"),
    "view-flatten-1ch": Case(ViewFlatten, _images(1), "classifier"),
    "view-flatten-3ch": Case(lambda: ViewFlatten(3), _images(3), "classifier"),
    "numel-einsum": Case(NumelEinsum, _images(1), "classifier"),
    "chunk-gate": Case(ChunkGate, _images(1), "classifier"),
    "activations": Case(Activations, _images(1), "classifier"),
    "upsample-skip": Case(UpsampleSkip, _images(1), "classifier"),
    "log-softmax-dropout": Case(LogSoftmaxDropout, _images(1), "classifier"),
    "recurrent-last": Case(RecurrentLast, _images(1), "classifier"),
}
