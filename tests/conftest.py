import os

import pytest
import torch

# Tests must not depend on the machine's thread count or on ../shared data.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="module")
def trained():
    """helpers.SmallNet trained 4 epochs on the blobs of helpers.loaders(), in eval mode."""
    from helpers import SmallNet, loaders

    from edgeshrink.train import TrainConfig, fit

    torch.manual_seed(0)
    model = SmallNet()
    fit(model, loaders()[0], TrainConfig(epochs=4, lr=3e-3))
    return model.eval()


@pytest.fixture
def tiny_recipe(tmp_path):
    """A deep-compression recipe with the least training that still exercises every stage."""
    path = tmp_path / "tiny.toml"
    path.write_text(
        """
name = "tiny"
[[stages]]
type = "prune"
method = "sparsity"
sparsity = 0.8
iterations = 2
[stages.finetune]
epochs = 1
[[stages]]
type = "share"
bits = 4
[stages.finetune]
epochs = 1
[[stages]]
type = "encode"
"""
    )
    return path
