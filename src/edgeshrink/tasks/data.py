"""Data sources: scikit-learn's digits (built in) and MNIST-format IDX files from a user's folder.

Everything is held in memory as tensors; `TensorLoader` batches them without the per-sample
overhead of `torch.utils.data.DataLoader` (these data sets fit in RAM many times over).
"""

from __future__ import annotations

import copy
import gzip
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgeshrink.errors import DataError


class TensorLoader:
    """Iterate (inputs, labels) batches over in-memory tensors; reshuffles each epoch when asked."""

    def __init__(
        self,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int = 128,
        shuffle: bool = False,
        seed: int = 0,
        repeats: int = 1,
        targets: torch.Tensor | None = None,
    ) -> None:
        if len(inputs) != len(labels):
            raise DataError(f"{len(inputs)} inputs but {len(labels)} labels: the two must have the same length")
        self.inputs = inputs
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.repeats = repeats  # passes per epoch: tiny data sets count a few passes as one epoch
        self.targets = targets  # per-example extra targets (a teacher's logits), yielded third when set
        self._generator = torch.Generator().manual_seed(seed)

    def with_targets(self, targets: torch.Tensor) -> TensorLoader:
        """The same batches in the same order, each with its rows of `targets` as a third element.

        The new loader shares this one's shuffling generator, so the epochs continue exactly as this
        loader's would have (distillation precomputes a frozen teacher's logits once this way).
        """
        if len(targets) != len(self.inputs):
            raise DataError(f"{len(targets)} targets for {len(self.inputs)} inputs: give one row per input")
        other = copy.copy(self)
        other.targets = targets
        return other

    def __len__(self) -> int:
        return self.repeats * ((len(self.inputs) + self.batch_size - 1) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = len(self.inputs)
        tensors = (self.inputs, self.labels) if self.targets is None else (self.inputs, self.labels, self.targets)
        for _ in range(self.repeats):
            order = torch.randperm(n, generator=self._generator) if self.shuffle else None
            for start in range(0, n, self.batch_size):
                if order is None:
                    yield tuple(t[start : start + self.batch_size] for t in tensors)
                else:
                    idx = order[start : start + self.batch_size]
                    yield tuple(t[idx] for t in tensors)


@dataclass(frozen=True)
class Split:
    """One split of a data set: float inputs (N, C, H, W) already normalised, int64 labels (N,)."""

    inputs: torch.Tensor
    labels: torch.Tensor

    def loader(self, batch_size: int = 128, shuffle: bool = False, seed: int = 0, repeats: int = 1) -> TensorLoader:
        return TensorLoader(
            self.inputs, self.labels, batch_size=batch_size, shuffle=shuffle, seed=seed, repeats=repeats
        )

    def subset(self, n: int, seed: int = 0) -> Split:
        """A fixed random subset of n examples (for calibration or quick checks)."""
        idx = self.subset_indices(n, seed)
        return Split(self.inputs[idx], self.labels[idx])

    def subset_indices(self, n: int, seed: int = 0) -> torch.Tensor:
        """Which examples `subset(n, seed)` takes (to tell which examples a model or quantizer never saw)."""
        order = torch.randperm(len(self.labels), generator=torch.Generator().manual_seed(seed))
        return order[: min(n, len(self.labels))]


@dataclass(frozen=True)
class Dataset:
    """A named data set with a training split and a held-out split used for every reported accuracy."""

    name: str
    train: Split
    test: Split
    num_classes: int

    def hold_out(self, n: int, seed: int = 0) -> tuple[Dataset, Split]:
        """(this data set without `n` training examples, those examples): a validation split to choose
        settings on, so that nothing is tuned on the test split. The same `n` and `seed` always hold out the
        same examples."""
        total = len(self.train.labels)
        if not 0 < n < total:
            raise DataError(f"cannot hold out {n} of the {total} training examples: choose 0 < n < {total}")
        order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
        rest, held = order[n:].sort().values, order[:n].sort().values
        train = Split(self.train.inputs[rest], self.train.labels[rest])
        return Dataset(self.name, train, self.test, self.num_classes), Split(
            self.train.inputs[held], self.train.labels[held]
        )


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits (1,797 images, shipped with the package): a stratified held-out split."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = bunch.images.astype(np.float32) / 16.0  # pixel values are 0..16
    x_train, x_test, y_train, y_test = train_test_split(
        images, bunch.target, test_size=test_fraction, random_state=seed, stratify=bunch.target
    )
    mean, std = float(x_train.mean()), float(x_train.std())

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        x = (torch.from_numpy(x).unsqueeze(1) - mean) / std
        return Split(x.contiguous(), torch.from_numpy(y.astype(np.int64)))

    return Dataset("digits", split(x_train, y_train), split(x_test, y_test), 10)


_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzip-compressed or raw, checking its header against its size."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path} is not a valid gzip file ({exc}); download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number); expected MNIST-format data")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: its header is incomplete")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path} holds {len(raw)} bytes but its header says {expected}: the file is damaged")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _find_idx(data_dir: Path, stem: str) -> Path:
    # Accept the original names, gzipped or not, and the dotted variant some mirrors use.
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    raise DataError(f"{data_dir} has no {stem}[.gz]: point --data-dir at a folder with the four MNIST-format IDX files")


def load_idx_dataset(name: str, data_dir: str | Path | None, mean: float, std: float) -> Dataset:
    """MNIST or Fashion-MNIST from the four IDX files in `data_dir`, scaled to [0, 1] then normalised."""
    if data_dir is None:
        raise DataError(f"the {name} task needs its data: pass --data-dir pointing at the folder with its IDX files")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} does not exist: pass --data-dir pointing at the IDX files")
    arrays = {key: read_idx(_find_idx(data_dir, stem)) for key, stem in _IDX_FILES.items()}

    def split(images: np.ndarray, labels: np.ndarray, which: str) -> Split:
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{data_dir}: {which} images {images.shape} and labels {labels.shape} do not match")
        x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
        return Split(((x - mean) / std).contiguous(), torch.from_numpy(labels.astype(np.int64)))

    train = split(arrays["train_images"], arrays["train_labels"], "training")
    test = split(arrays["test_images"], arrays["test_labels"], "test")
    return Dataset(name, train, test, int(max(train.labels.max(), test.labels.max())) + 1)
