"""A zoo family's input resize (the architecture search's resolution knob) runs before the file, in the device's
input pipeline: the file takes the resized input, and the model judged in PyTorch is resize + the file's model.
Oracle: the whole PyTorch model on the original input."""

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeshrink.artifact import Artifact
from edgeshrink.autosearch.deploy import deploy, split_input_resize
from edgeshrink.devices.catalogue import get_device
from edgeshrink.models.dscnn import DSCNN


def _model(resolution):
    torch.manual_seed(0)
    return DSCNN(num_classes=10, width=0.25, blocks=1, resolution=resolution).eval()


def test_the_resize_moves_out_of_the_model_and_the_pair_computes_what_the_model_computes():
    model, x = _model(20), torch.rand(8, 1, 28, 28)
    split, resize, notes = split_input_resize(Artifact(model, example_input=x[:1]), [x])
    assert resize is not None and resize.size == 20 and "20x20" in notes[0]
    assert tuple(split.example().shape) == (1, 1, 20, 20)
    with torch.no_grad():
        assert torch.equal(split.model(resize(x)), model(x))
        assert model.resize.size == 20  # the caller's model is left as it was


def test_models_without_a_resize_are_left_alone():
    x = torch.rand(4, 1, 28, 28)
    for model in (_model(None), nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()):
        art = Artifact(model, example_input=x[:1])
        split, resize, notes = split_input_resize(art, [x])
        assert split is art and resize is None and notes == []


def test_a_resize_that_is_not_the_first_op_is_not_split():
    class Late(nn.Module):  # a clamp before the resize: resizing first would change what the model computes
        def __init__(s):
            super().__init__()
            s.resize = _model(16).resize

        def forward(s, x):
            return s.resize(x.clamp(max=0.5)).flatten(1)

    model, x = Late().eval(), torch.rand(4, 1, 28, 28)
    art = Artifact(model, example_input=x[:1])
    split, resize, notes = split_input_resize(art, [x])
    assert split is art and resize is None and notes == []


@pytest.mark.skipif(
    importlib.util.find_spec("tflite_micro") is None or importlib.util.find_spec("litert_torch") is None,
    reason="needs the tflite and tflm extras",
)
def test_a_resized_candidate_exports_to_tflite_micro_and_is_judged_on_the_original_images(tmp_path: Path):
    model = _model(16)
    x = torch.rand(64, 1, 28, 28)
    dep = deploy(Artifact(model, example_input=x[:1]), get_device("cortex-m7"), tmp_path, [x], [x[:32]])
    assert dep.format == "tflm" and "16x16" in dep.notes[0]
    with torch.no_grad():  # the int8 model judged on 28x28 images: same top-1 as the float model on nearly all
        agree = (dep.model(x).argmax(1) == model(x).argmax(1)).float().mean()
    assert agree >= 0.9
