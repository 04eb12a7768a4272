"""Architectures users bring that the tests do not build: layers, functional calls and forward styles
outside the zoo (the models of benchmarks/unseen_architectures.py). Each classifies scikit-learn's 8x8
digits, input (N, 1, 8, 8): sequence models read the rows as 8 time steps, token models the rounded pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KWS1D(nn.Module):  # DS-CNN on MFCC-like (N, 8, 8): depthwise Conv1d + pointwise + BN
    def __init__(s):
        super().__init__()
        s.stem = nn.Sequential(nn.Conv1d(8, 32, 3, padding=1, bias=False), nn.BatchNorm1d(32), nn.ReLU())
        s.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(32, 32, 3, padding=1, groups=32, bias=False),
                nn.BatchNorm1d(32),
                nn.ReLU(),
                nn.Conv1d(32, 32, 1, bias=False),
                nn.BatchNorm1d(32),
                nn.ReLU(),
            )
            for _ in range(2)
        )
        s.pool = nn.AdaptiveAvgPool1d(1)
        s.fc = nn.Linear(32, 10)

    def forward(s, x):
        x = s.stem(x.squeeze(1))
        for b in s.blocks:
            x = b(x)
        return s.fc(s.pool(x).flatten(1))


class BiLSTM(nn.Module):
    def __init__(s):
        super().__init__()
        s.l = nn.LSTM(8, 24, num_layers=2, batch_first=True, bidirectional=True)
        s.n = nn.LayerNorm(48)
        s.fc = nn.Linear(48, 10)

    def forward(s, x):
        h, _ = s.l(x.squeeze(1))
        return s.fc(s.n(h.mean(1)))


class TextEnc(nn.Module):  # tokens from pixel values
    def __init__(s):
        super().__init__()
        s.e = nn.Embedding(17, 32)
        s.pos = nn.Parameter(torch.randn(1, 64, 32) * 0.02)
        s.t = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(32, 4, 64, 0.1, activation="gelu", batch_first=True, norm_first=True), 2
        )
        s.fc = nn.Linear(32, 10)

    def forward(s, x):
        tok = (x.flatten(1) * 16).round().clamp(0, 16).long()
        return s.fc(s.t(s.e(tok) + s.pos).mean(1))


class Inception(nn.Module):
    def __init__(s):
        super().__init__()
        s.a = nn.Conv2d(1, 8, 1)
        s.b = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU6())
        s.c = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(1, 8, 1), nn.LeakyReLU(0.1))
        s.d = nn.Conv2d(24, 16, 3, stride=2, padding=1)
        s.drop = nn.Dropout(0.2)
        s.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(s, x):
        x = torch.cat([F.relu(s.a(x)), s.b(x), s.c(x)], 1)
        x = F.avg_pool2d(F.relu(s.d(x)), 1)
        return s.fc(s.drop(x.reshape(x.size(0), -1)))


class ResNoBias(nn.Module):
    def __init__(s):
        super().__init__()
        s.c1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        s.b1 = nn.BatchNorm2d(16)
        s.c2 = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
        s.b2 = nn.BatchNorm2d(32)
        s.c3 = nn.Conv2d(32, 32, 3, padding=1, bias=False)
        s.b3 = nn.BatchNorm2d(32)
        s.down = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False), nn.BatchNorm2d(32))
        s.fc = nn.Linear(32, 10)

    def forward(s, x):
        x = F.relu(s.b1(s.c1(x)))
        y = s.b3(s.c3(F.relu(s.b2(s.c2(x)))))
        x = F.relu(y + s.down(x))
        return s.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ManualAttn(nn.Module):  # attention written by hand with matmul/softmax
    def __init__(s):
        super().__init__()
        s.inp = nn.Linear(8, 32)
        s.qkv = nn.Linear(32, 96)
        s.o = nn.Linear(32, 32)
        s.n = nn.LayerNorm(32)
        s.fc = nn.Linear(32, 10)

    def forward(s, x):
        h = s.inp(x.squeeze(1))
        q, k, v = s.qkv(h).chunk(3, dim=-1)
        a = torch.softmax(q @ k.transpose(-2, -1) / 32**0.5, dim=-1)
        h = s.n(h + s.o(a @ v))
        return s.fc(h.mean(1))


class Gated(nn.Module):  # GLU, PReLU, ELU, Mish, Tanh/Sigmoid gates, GroupNorm
    def __init__(s):
        super().__init__()
        s.c = nn.Conv2d(1, 16, 3, padding=1)
        s.gn = nn.GroupNorm(4, 8)
        s.p = nn.PReLU()
        s.c2 = nn.Conv2d(8, 16, 3, padding=1)
        s.fc1 = nn.Linear(16, 32)
        s.fc2 = nn.Linear(32, 10)

    def forward(s, x):
        x = F.glu(s.c(x), dim=1)
        x = s.p(s.gn(x))
        x = s.c2(x)
        x = torch.tanh(x) * torch.sigmoid(x) + F.elu(x) + F.mish(x)
        x = x.mean((2, 3))
        return s.fc2(F.softplus(s.fc1(x)))


class UpNet(nn.Module):  # encoder-decoder with ConvTranspose and interpolate, then classifier
    def __init__(s):
        super().__init__()
        s.e = nn.Conv2d(1, 16, 3, stride=2, padding=1)
        s.d = nn.ConvTranspose2d(16, 8, 2, stride=2)
        s.c = nn.Conv2d(8 + 1, 8, 3, padding=1)
        s.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(s, x):
        h = F.relu(s.e(x))
        u = F.relu(s.d(h)) + F.interpolate(h[:, :8], scale_factor=2.0, mode="nearest")
        y = F.relu(s.c(torch.cat([u, x], 1)))
        return s.fc(F.max_pool2d(y, 2).flatten(1))


class GRUSeqFirst(nn.Module):  # batch_first=False, 2 layers, bidirectional
    def __init__(s):
        super().__init__()
        s.g = nn.GRU(8, 16, num_layers=2, bidirectional=True)
        s.fc = nn.Linear(32, 10)

    def forward(s, x):
        h, hn = s.g(x.squeeze(1).transpose(0, 1))
        return s.fc(h[-1])


class ConvNeXt(nn.Module):  # depthwise 7x7, channels-last LayerNorm, GELU, layer scale
    def __init__(s):
        super().__init__()
        s.stem = nn.Conv2d(1, 16, 2, stride=2)
        s.dw = nn.Conv2d(16, 16, 7, padding=3, groups=16)
        s.ln = nn.LayerNorm(16)
        s.pw1 = nn.Linear(16, 64)
        s.pw2 = nn.Linear(64, 16)
        s.gamma = nn.Parameter(torch.full((16,), 0.1))
        s.fc = nn.Linear(16, 10)

    def forward(s, x):
        x = s.stem(x)
        h = s.dw(x).permute(0, 2, 3, 1)
        h = s.pw2(F.gelu(s.pw1(s.ln(h)))) * s.gamma
        x = x + h.permute(0, 3, 1, 2)
        return s.fc(x.mean((2, 3)))


class TinyViT(nn.Module):
    def __init__(s):
        super().__init__()
        s.patch = nn.Conv2d(1, 32, 2, stride=2)
        s.cls = nn.Parameter(torch.zeros(1, 1, 32))
        s.pos = nn.Parameter(torch.randn(1, 17, 32) * 0.02)
        s.t = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, 0.0, batch_first=True, activation="gelu"), 2)
        s.norm = nn.LayerNorm(32)
        s.fc = nn.Linear(32, 10)

    def forward(s, x):
        p = s.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([s.cls.expand(p.shape[0], -1, -1), p], 1) + s.pos
        return s.fc(s.norm(s.t(t))[:, 0])


class Shared(nn.Module):  # one conv applied twice (weight tying), buffers for input normalisation
    def __init__(s):
        super().__init__()
        s.register_buffer("mean", torch.tensor(0.1))
        s.register_buffer("std", torch.tensor(0.3))
        s.a = nn.Conv2d(1, 8, 3, padding=1)
        s.b = nn.Conv2d(8, 8, 3, padding=1)
        s.fc = nn.Linear(8, 10)

    def forward(s, x):
        x = (x - s.mean) / s.std
        h = F.relu(s.a(x))
        h = F.relu(s.b(h))
        h = F.relu(s.b(h))
        return s.fc(h.mean((2, 3)))


class MlpBn(nn.Module):  # BatchNorm1d after Linear, Dropout, softmax output (probabilities)
    def __init__(s):
        super().__init__()
        s.f1 = nn.Linear(64, 64)
        s.bn = nn.BatchNorm1d(64)
        s.f2 = nn.Linear(64, 10)
        s.drop = nn.Dropout(0.3)

    def forward(s, x):
        return torch.log_softmax(s.f2(s.drop(F.relu(s.bn(s.f1(x.flatten(1)))))), dim=1)


class Seq1D(nn.Module):  # ConvTranspose1d, MaxPool1d, AvgPool1d, Upsample, F.pad, stack
    def __init__(s):
        super().__init__()
        s.c = nn.Conv1d(8, 16, 3, padding=1)
        s.up = nn.ConvTranspose1d(16, 16, 2, stride=2)
        s.c2 = nn.Conv1d(16, 16, 3)
        s.fc = nn.Linear(32, 10)

    def forward(s, x):
        h = F.max_pool1d(F.relu(s.c(x.squeeze(1))), 2)
        h = F.relu(s.up(h)) + F.interpolate(h, scale_factor=2.0)
        h = F.relu(s.c2(F.pad(h, (1, 1))))
        return s.fc(torch.stack([h.mean(-1), F.avg_pool1d(h, 8).amax(-1)], 1).flatten(1))


class SELinear(nn.Module):  # squeeze-excite with Linear layers and view
    def __init__(s):
        super().__init__()
        s.c = nn.Conv2d(1, 16, 3, padding=1)
        s.bn = nn.BatchNorm2d(16)
        s.s1 = nn.Linear(16, 4)
        s.s2 = nn.Linear(4, 16)
        s.c2 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        s.fc = nn.Linear(16, 10)

    def forward(s, x):
        h = F.relu6(s.bn(s.c(x)))
        g = torch.sigmoid(s.s2(F.relu(s.s1(h.mean((2, 3)))))).view(-1, 16, 1, 1)
        h = F.hardswish(s.c2(h * g))
        return s.fc(F.adaptive_max_pool2d(h, 1).flatten(1))


class EmbLSTM(nn.Module):  # token embedding into LSTM with projection
    def __init__(s):
        super().__init__()
        s.e = nn.Embedding(17, 16)
        s.l = nn.LSTM(16, 32, batch_first=True, proj_size=16)
        s.fc = nn.Linear(16, 10)

    def forward(s, x):
        tok = (x.flatten(1) * 16).round().clamp(0, 16).long()
        return s.fc(s.l(s.e(tok))[0][:, -1])


MODELS = {
    cls.__name__: cls
    for cls in (KWS1D, BiLSTM, TextEnc, Inception, ResNoBias, ManualAttn, Gated, UpNet, GRUSeqFirst)
    + (ConvNeXt, TinyViT, Shared, MlpBn, Seq1D, SELinear, EmbLSTM)
}
