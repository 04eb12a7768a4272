import gzip
import struct

import numpy as np
import pytest

from edgeshrink.errors import DataError
from edgeshrink.tasks.data import load_digits, load_idx_dataset, read_idx


def write_idx(path, array, compress=False):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def make_mnist(folder, compress):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    images = rng.integers(0, 256, (20, 28, 28))
    labels = rng.integers(0, 10, 20)
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", images, compress)
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", labels, compress)
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", images[:5], compress)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", labels[:5], compress)
    return images, labels


@pytest.mark.parametrize("compress", [False, True])
def test_idx_dataset_reads_gz_and_raw(tmp_path, compress):
    images, labels = make_mnist(tmp_path / "m", compress)
    ds = load_idx_dataset("mnist", tmp_path / "m", mean=0.5, std=0.25)
    assert ds.train.inputs.shape == (20, 1, 28, 28) and ds.test.inputs.shape == (5, 1, 28, 28)
    assert np.allclose(ds.train.inputs[:, 0].numpy(), (images / 255.0 - 0.5) / 0.25, atol=1e-6)
    assert np.array_equal(ds.train.labels.numpy(), labels)


def test_damaged_idx_files_are_refused(tmp_path):
    path = tmp_path / "x"
    write_idx(path, np.zeros((3, 4, 4)))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="damaged"):
        read_idx(path)
    path.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="not an IDX"):
        read_idx(path)


def test_missing_data_dir_is_one_line(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        load_idx_dataset("mnist", tmp_path / "nowhere", 0, 1)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="--data-dir"):
        load_idx_dataset("mnist", None, 0, 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="train-images"):
        load_idx_dataset("mnist", tmp_path / "empty", 0, 1)


def test_digits_split_is_held_out_and_stratified():
    ds = load_digits()
    assert len(ds.train.labels) + len(ds.test.labels) == 1797
    train_rows = {tuple(x.flatten().tolist()) for x in ds.train.inputs}
    overlap = sum(tuple(x.flatten().tolist()) in train_rows for x in ds.test.inputs)
    assert overlap < 5  # a few digits are pixel-identical duplicates in the source data
    assert set(ds.test.labels.tolist()) == set(range(10))
