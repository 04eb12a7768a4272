import json

import torch
from helpers import cli

import edgeshrink
from edgeshrink.architecture import Arch
from edgeshrink.artifact import Artifact
from edgeshrink.exporters.onnx_build import to_onnx
from edgeshrink.io.writer import save_checkpoint
from edgeshrink.mac_count import count_macs
from edgeshrink.tasks.zoo import create_model


def test_profile_checkpoint_and_onnx_agree(tmp_path):
    torch.manual_seed(0)
    model = create_model("lenet300")
    ckpt = save_checkpoint(tmp_path / "m.pt", Artifact(model, Arch(task="mnist-lenet300", model="lenet300")))
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(to_onnx(model.eval(), torch.zeros(1, 1, 28, 28))[0].SerializeToString())
    run = cli("profile", ckpt, "--device", "cortex-m4", "--json", "--no-latency")
    assert run.returncode == 0, run.stderr
    p = json.loads(run.stdout)
    assert p["macs"]["dense"] == count_macs(model, (1, 28, 28))
    assert p["weights"]["file"] == ckpt.stat().st_size
    assert p["weights"]["dense_fp32"] == sum(t.numel() for t in model.parameters()) * 4
    assert p["device"]["fit"]["flash"]["ok"] is False  # 1.07 MB of fp32 weights > 1 MB
    o = edgeshrink.profile(onnx_path, latency=False)
    assert o.macs.dense == p["macs"]["dense"]
    assert o.activations.peak_bytes == p["activations"]["peak_bytes"]
    assert o.weights.parameters == p["weights"]["parameters"]
    measured = edgeshrink.profile(ckpt, latency=True, onnx=False).latency["pytorch"]
    assert measured.batch == 1 and measured.median_ms > 0


def test_checkpoint_without_architecture_asks_for_model(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(create_model("lenet300").state_dict(), path)
    run = cli("profile", path, "--no-latency")
    assert run.returncode == 2 and "pass --model" in run.stderr
    p = edgeshrink.profile(path, latency=False, model_name="lenet300")
    assert p.macs.dense == 784 * 300 + 300 * 100 + 100 * 10
