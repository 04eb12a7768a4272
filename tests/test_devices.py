import itertools

import pytest
import torch
from helpers import cli

import edgeshrink
from edgeshrink.architecture import Arch
from edgeshrink.artifact import Artifact
from edgeshrink.devices.advise import TYPICAL_FACTORS, advise_costs, likeliest_recipe
from edgeshrink.devices.catalogue import get_device, get_network, load_devices, load_networks
from edgeshrink.devices.schema import DEVICE_FIGURES
from edgeshrink.errors import ConfigError
from edgeshrink.io.writer import save_checkpoint
from edgeshrink.tasks.zoo import create_model
from edgeshrink.weights import attach_codebook

LENET5 = Arch(task="mnist-lenet5", model="lenet5")


@pytest.fixture(scope="module")
def lenet5_files(tmp_path_factory):
    """An untrained dense LeNet-5 checkpoint and a 95%-pruned, 16-value version packed as a container."""
    folder = tmp_path_factory.mktemp("lenet5")
    torch.manual_seed(0)
    model = create_model("lenet5")
    dense = save_checkpoint(folder / "dense.pt", Artifact(model, LENET5))
    for m in (model.conv1, model.conv2, model.fc1, model.fc2):
        w = m.weight.detach()
        keep = w.abs() >= w.abs().flatten().quantile(0.95)
        levels = torch.linspace(float(w.min()), float(w.max()), 16)
        idx = (w.unsqueeze(-1) - levels).abs().argmin(-1)
        attach_codebook(m, "weight", levels, torch.where(keep, idx, torch.full_like(idx, -1)))
    container = edgeshrink.save(Artifact(model, LENET5), folder / "model.eshrink").path
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
            "is not a run folder, an .eshrink container or a checkpoint (.pt), or an exported .onnx / .tflite file",
        ),
        (["profile", lenet5_files[0], "--device", "this-machine", "--devices-dir", tmp_path], "devices calibrate"),
    ]:
        run = cli(*args)
        assert run.returncode == 2 and message in run.stderr, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1


def test_the_fit_counts_the_file_in_flash_and_the_weights_the_runtime_holds_in_ram(lenet5_files):
    dense, container = lenet5_files
    m4 = get_device("cortex-m4")
    p = edgeshrink.profile(dense, latency=False)
    a = edgeshrink.advise(dense, device="cortex-m4", network="offline")
    assert a.verdict == "cannot-run" and not a.on_device.fit.flash.ok
    need = max(p.weights.stored / m4.flash_bytes, p.weights.stored / (m4.ram_bytes - p.activations.peak_bytes))
    assert a.shrink_factor == pytest.approx(need)
    assert a.recipe is not None and a.recipe in a.reasons[0] and f"{need:.1f}x" in a.reasons[0]
    # the container is small in flash, but no runtime executes it: it is decoded to dense weights in RAM
    c = edgeshrink.profile(container, device="cortex-m4", latency=False)
    assert c.device.fit.flash.need == container.stat().st_size and c.device.fit.flash.ok
    assert c.device.fit.ram.need == p.weights.stored + c.activations.peak_bytes and not c.device.fit.ram.ok
    b = edgeshrink.advise(container, device="cortex-m4", network="ble")
    assert b.verdict == "cloud" and b.file == str(container) and "decoded to dense weights" in b.reasons[0]
    pi = edgeshrink.advise(container, device="raspberry-pi-4", network="offline")
    assert pi.verdict == "on-device" and pi.reasons[0].startswith("fit (")


def test_private_and_offline_never_answer_cloud(lenet5_files):
    costs = [edgeshrink.profile(f, latency=False).costs for f in lenet5_files]
    cloud = get_device("cloud-server")
    nets = load_networks()
    seen = set()
    for prof, dev, net, budget, private in itertools.product(
        costs, load_devices().values(), nets.values(), [None, 0.001, 1e6], [False, True]
    ):
        a = advise_costs(prof, dev, net, cloud, budget, private, list(TYPICAL_FACTORS))
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
