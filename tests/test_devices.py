import itertools
import subprocess
import sys

import pytest
import torch

from edgeshrink.checkpoints import save_checkpoint
from edgeshrink.devices.advise import TYPICAL_FACTORS, advise, advise_profile, likeliest_recipe
from edgeshrink.devices.catalogue import get_device, get_network, load_devices, load_networks
from edgeshrink.devices.schema import DEVICE_FIGURES
from edgeshrink.encode.container import pack
from edgeshrink.errors import ConfigError
from edgeshrink.measure.profile import profile
from edgeshrink.tasks.zoo import create_model
from edgeshrink.weights import attach_codebook

LENET5 = {"task": "mnist-lenet5", "model": "lenet5"}


def cli(*args):
    return subprocess.run([sys.executable, "-m", "edgeshrink.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def lenet5_files(tmp_path_factory):
    """An untrained dense LeNet-5 checkpoint and a 95%-pruned, 16-value version packed as a container."""
    folder = tmp_path_factory.mktemp("lenet5")
    torch.manual_seed(0)
    model = create_model("lenet5")
    dense = save_checkpoint(folder / "dense.pt", model, LENET5)
    for m in (model.conv1, model.conv2, model.fc1, model.fc2):
        w = m.weight.detach()
        keep = w.abs() >= w.abs().flatten().quantile(0.95)
        levels = torch.linspace(float(w.min()), float(w.max()), 16)
        idx = (w.unsqueeze(-1) - levels).abs().argmin(-1)
        attach_codebook(m, "weight", levels, torch.where(keep, idx, torch.full_like(idx, -1)))
    container = pack(model, folder / "model.eshrink", arch=LENET5).path
    return dense, container


def test_every_catalogue_figure_has_a_source():
    devices = load_devices()
    for name in (
        "cortex-m4",
        "cortex-m7",
        "esp32-s3",
        "raspberry-pi-zero-2w",
        "raspberry-pi-4",
        "phone-midrange",
        "jetson-nano",
        "cloud-server",
    ):
        d = devices[name]
        assert all(d.sources.get(f) for f in DEVICE_FIGURES if getattr(d, f) is not None)
    m4 = devices["cortex-m4"]
    assert (m4.flash_bytes, m4.ram_bytes) == (1024 * 1024, 256 * 1024)
    assert set(load_networks()) >= {"wifi", "lte", "ble", "lora", "offline"}


def test_user_device_file_is_read_and_overrides(tmp_path):
    from edgeshrink.devices.calibrate import device_toml

    src = get_device("cortex-m4")

    (tmp_path / "mine.toml").write_text(device_toml(src.model_copy(update={"name": "my-board", "flash_bytes": 123})))
    assert get_device("my-board", tmp_path).flash_bytes == 123
    with pytest.raises(ConfigError, match="unknown device 'nope'"):
        get_device("nope", tmp_path)


def test_device_file_with_a_missing_field_is_a_one_line_error(tmp_path):
    from edgeshrink.devices.calibrate import device_toml

    lines = device_toml(get_device("cortex-m4")).splitlines()
    (tmp_path / "broken.toml").write_text("\n".join(ln for ln in lines if not ln.startswith("flash_bytes =")))
    run = cli("devices", "--devices-dir", tmp_path)
    assert run.returncode == 2
    assert "broken.toml" in run.stderr and "missing field 'flash_bytes'" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_unknown_device_and_garbage_file_are_one_line_errors(tmp_path, lenet5_files):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model" * 50)
    for args, message in [
        (["advise", lenet5_files[0], "--device", "toaster", "--network", "wifi"], "unknown device 'toaster'"),
        (
            ["profile", junk],
            "is not a checkpoint (.pt), a run folder, an .eshrink container, an .onnx or a .tflite file",
        ),
        (["profile", lenet5_files[0], "--device", "this-machine", "--devices-dir", tmp_path], "devices calibrate"),
    ]:
        run = cli(*args)
        assert run.returncode == 2 and message in run.stderr, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1


def test_dense_lenet5_does_not_fit_the_m4_and_the_container_does(lenet5_files):
    dense, container = lenet5_files
    a = advise(dense, "cortex-m4", "offline")
    assert a.verdict == "cannot-run"
    expected = profile(dense, latency=False)
    need = expected["weights"]["file"] / (256 * 1024 - expected["activations"]["peak_bytes"])
    assert a.shrink_factor == pytest.approx(need)
    assert a.recipe == "deep-compression" and "deep-compression" in a.reasons[0]
    assert f"{need:.1f}x" in a.reasons[0]
    b = advise(container, "cortex-m4", "ble")
    assert b.verdict == "on-device" and b.reasons[0].startswith("fit: weights")


def test_private_and_offline_never_answer_cloud(lenet5_files):
    profiles = [profile(f, latency=False) for f in lenet5_files]
    cloud = get_device("cloud-server")
    nets = load_networks()
    seen = set()
    for prof, dev, net, budget, private in itertools.product(
        profiles, load_devices().values(), nets.values(), [None, 0.001, 1e6], [False, True]
    ):
        a = advise_profile(prof, dev, net, cloud, budget, private, list(TYPICAL_FACTORS))
        seen.add(a.verdict)
        if private or not net.available:
            assert a.verdict != "cloud", (dev.name, net.name, budget)
        heads = [r.split(" ")[0].rstrip(":") for r in a.reasons]
        assert heads == ["fit", "latency", "energy", "privacy", "reliability"]  # the reasons, in order
    assert seen == {"on-device", "cloud", "cannot-run"}  # every answer is reachable


def test_recipe_choice_names_only_registered_recipes():
    assert likeliest_recipe(3.0, ["deep-compression", "int8", "fp16"])[0] == "int8"
    assert likeliest_recipe(1.5, ["deep-compression", "fp16"])[0] == "fp16"
    assert likeliest_recipe(3.0, ["deep-compression"])[0] == "deep-compression"
    name, why = likeliest_recipe(100.0, ["int8"])
    assert name == "int8" and "short of" in why
    assert likeliest_recipe(2.0, ["my-own"])[0] is None


def test_calibrate_writes_a_device_that_loads(tmp_path):
    from edgeshrink.devices.calibrate import calibrate, write_device

    device = calibrate(budget_s=0.01)
    path = write_device(device, tmp_path)
    loaded = get_device("this-machine", tmp_path)
    assert loaded == device and loaded.measured and path.name == "this-machine.toml"
    assert all("measured" in loaded.sources[f] for f in DEVICE_FIGURES if getattr(loaded, f) is not None)
    assert get_network("wifi").available and not get_network("offline").available
