"""Sequence models on images read row by row: an image of C x H x W is a sequence of H steps with
C*W features (Le et al. 2015's pixel-row MNIST). Two families users bring to edge devices:

- `RowTransformer`: a small transformer encoder (multi-head attention, LayerNorm, GELU), the shape
  of keyword-spotting and sensor transformers;
- `RowGRU`: a Conv1d front end with BatchNorm and a GRU (a CRNN), the shape of keyword-spotting GRUs.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeshrink.models.registry import register_model


def _rows(x: torch.Tensor) -> torch.Tensor:
    """[batch, C, H, W] -> [batch, H, C*W]."""
    b, c, h, w = x.shape
    return x.permute(0, 2, 1, 3).reshape(b, h, c * w)


class RowTransformer(nn.Module):
    """Linear embedding of each row + learned positions -> pre-norm transformer encoder -> mean -> head."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: tuple[int, int] = (28, 28),
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
    ) -> None:
        super().__init__()
        rows, cols = image_size
        self.embed = nn.Linear(in_channels * cols, dim)
        self.position = nn.Parameter(torch.zeros(1, rows, dim))
        layer = nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.embed(_rows(x)) + self.position)
        return self.head(self.norm(h).mean(1))


class RowGRU(nn.Module):
    """Two Conv1d over rows (features as channels), each with BatchNorm and ReLU -> GRU -> last step -> head."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: tuple[int, int] = (28, 28),
        channels: int = 64,
        hidden: int = 64,
    ) -> None:
        super().__init__()
        self.front = nn.Sequential(
            nn.Conv1d(in_channels * image_size[1], channels, 3, padding=1, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
        )
        self.gru = nn.GRU(channels, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.front(_rows(x).transpose(1, 2)).transpose(1, 2)  # Conv1d over time: [batch, features, time]
        out, _ = self.gru(h)
        return self.head(out[:, -1])


register_model(
    "row-transformer",
    (1, 28, 28),
    "transformer encoder over image rows (dim 64, 2 layers, 4 heads; attention, LayerNorm, GELU)",
)(RowTransformer)
register_model(
    "row-gru",
    (1, 28, 28),
    "Conv1d + BatchNorm front end and a GRU over image rows (keyword-spotting shape)",
)(RowGRU)
