import os

import pytest
import torch

# Tests must not depend on the machine's thread count or on ../shared data. Under pytest-xdist (`make test`
# runs one worker per CPU) each worker keeps to one thread: two workers of two OpenMP threads each on two
# cores would spin against each other (../shared/ENVIRONMENT.md).
# The processes a test starts (the search's workers) inherit the one thread.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
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
