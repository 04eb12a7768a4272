import json

import pytest
from helpers import cli


def test_demo_path_at_tiny_settings(tmp_path, tiny_recipe):
    out = tmp_path / "demo"
    run = cli("compress", "--task", "digits-cnn", "--recipe", tiny_recipe, "--baseline-epochs", 1, "--out", out, "-q")
    assert run.returncode == 0, run.stderr
    report = json.loads((out / "report.json").read_text())
    assert (out / "model.eshrink").stat().st_size == report["container"]["bytes"]
    assert "Total" in run.stdout and "from container" in run.stdout
    evaluated = cli("evaluate", out / "model.eshrink")  # the task comes from the container itself
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"test accuracy {report['container']['accuracy']:.2f}%" in evaluated.stdout
    exported = cli("export", out, "--activation-type", "uint8")  # verified on the task's test split
    assert exported.returncode == 0, exported.stderr
    assert (out / "model.onnx").is_file() and "top-1 agreement 100.00%" in exported.stdout
    summary = json.loads((out / "model.onnx.export.json").read_text())
    assert summary["parity"]["examples"] == 360 and summary["bytes"] == (out / "model.onnx").stat().st_size
    # TFLite Micro sources: the float model is quantized to int8 on the task's data, verified in TFLM
    c = cli("export", out, "--format", "c", "--name", "digits", "--verify-examples", 100)
    assert c.returncode == 0, c.stderr
    assert "in TensorFlow Lite Micro" in c.stdout and "int8 input: scale" in c.stdout
    assert (out / "digits_data.h").is_file() and (out / "digits_data.cc").is_file()
    summary = json.loads((out / "digits.tflite.export.json").read_text())
    assert summary["precision"] == "int8" and summary["parity"]["top1_agreement"] >= 99.0
    assert f"tensor arena: {summary['extra']['arena_bytes']:,} bytes" in (out / "digits_data.h").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["compress", "--task", "mnist-lenet5", "--data-dir", "/nonexistent/mnist"], "does not exist"),
        (["compress", "--task", "mnist-lenet5"], "--data-dir"),
        (["compress", "--task", "nope"], "unknown task 'nope'"),
        (["compress", "--task", "digits-cnn", "--recipe", "nope"], "unknown recipe 'nope'"),
        (["evaluate", "/nonexistent/model.eshrink"], "does not exist"),
        (["export", "/nonexistent/run"], "does not exist"),
        (["export", "/nonexistent/run", "--format", "tensorrt"], "unknown export format"),
        (["export", "/nonexistent/run", "--format", "c", "--name", "2fast"], "not a C identifier"),
    ],
)
def test_bad_input_is_one_line(args, message):
    run = cli(*args)
    assert run.returncode == 2
    assert message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_bad_recipe_key_is_one_line(tmp_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text('[[stages]]\ntype = "share"\nbitz = 4\n')
    run = cli("compress", "--task", "digits-cnn", "--recipe", recipe)
    assert run.returncode == 2 and "unknown key 'bitz'" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_evaluate_refuses_garbage(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world" * 10)
    run = cli("evaluate", junk, "--task", "digits-cnn")
    assert run.returncode == 2 and "is not a run folder, an .eshrink container or a checkpoint (.pt)" in run.stderr
