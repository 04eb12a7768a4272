import os

import pytest
import torch

# Tests must not depend on the machine's thread count or on ../shared data.
torch.set_num_threads(min(2, os.cpu_count() or 1))


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
