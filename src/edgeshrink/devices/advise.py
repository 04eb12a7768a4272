"""On the device or in the cloud? An answer with its reasons in order: fit, latency against the budget,
energy (computing on the device vs sending the input over the radio), privacy, reliability.

`--private` (the input may not leave the device) and an offline network never answer cloud.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from edgeshrink.devices.catalogue import get_device, get_network
from edgeshrink.devices.estimate import device_energy_uj, estimate_latency, estimate_on_device
from edgeshrink.devices.schema import Device, Network

CLOUD_DEVICE = "cloud-server"

# Size reduction each built-in recipe typically gives (dense fp32 bytes / stored bytes), least
# aggressive first. Only recipes present in the registry are ever named.
TYPICAL_FACTORS: dict[str, tuple[float, str]] = {
    "fp16": (2.0, "16-bit floats for 32-bit ones"),
    "int8": (4.0, "8-bit integers for 32-bit floats"),
    "int8-qat": (4.0, "8-bit integers, with quantization-aware training"),
    "w4a8": (7.0, "4-bit weights (8-bit first and last layers), 8-bit activations"),
    "deep-compression": (35.0, "Han et al., ICLR 2016: 35x (AlexNet) to 49x (VGG-16); 39x on LeNet-5"),
}

Verdict = Literal["on-device", "cloud", "cannot-run"]


@dataclass
class Advice:
    verdict: Verdict
    reasons: list[str]
    device: str
    network: str
    shrink_factor: float | None = None
    recipe: str | None = None
    figures: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def likeliest_recipe(factor: float, available: Sequence[str]) -> tuple[str | None, str]:
    """The least aggressive available recipe that typically reaches `factor`, else the strongest one."""
    known = [(TYPICAL_FACTORS[r][0], r) for r in TYPICAL_FACTORS if r in available]
    if not known:
        return None, "no built-in recipe with a known typical reduction is installed"
    for typical, name in sorted(known):
        if typical >= factor:
            return name, f"typically {typical:g}x smaller ({TYPICAL_FACTORS[name][1]})"
    typical, name = max(known)
    return name, f"typically {typical:g}x smaller, short of the {factor:.1f}x needed: also shrink the architecture"


def _upload(network: Network, nbytes: int) -> tuple[float, float]:
    """(seconds, µJ) to send `nbytes` and wait one round trip for the answer."""
    seconds = nbytes / network.uplink_bytes_per_s / network.duty_cycle + network.rtt_s
    energy = nbytes * network.tx_nj_per_byte / 1e3 + network.rtt_s * network.wait_power_w * 1e6
    return seconds, energy


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def advise_profile(
    profile: dict,
    device: Device,
    network: Network,
    cloud: Device,
    latency_budget_ms: float | None = None,
    private: bool = False,
    recipes: Sequence[str] = (),
) -> Advice:
    """The decision from a profile (see `measure.profile`); pure: no measurement here."""
    est = estimate_on_device(profile, device)
    fit, dev_ms = est["fit"], est["latency"]["ms"]
    dev_uj = device_energy_uj(est["energy"])
    input_bytes = profile["activations"]["input_bytes"]
    cloud_allowed = network.available and not private
    reasons: list[str] = []
    figures: dict = {"on_device": est}
    fits = fit["flash"]["ok"] and fit["ram"]["ok"]
    factor = recipe = None

    # 1. fit
    if fits:
        reasons.append(
            f"fit: weights {_mb(fit['flash']['need'])} fit flash {_mb(fit['flash']['have'])}; weights + peak "
            f"activations {_mb(fit['ram']['need'])} fit RAM {_mb(fit['ram']['have'])}"
        )
    elif not fit["activations_alone_fit"]:
        reasons.append(
            f"fit: peak activations {_mb(profile['activations']['peak_bytes'])} alone exceed RAM "
            f"{_mb(device.ram_bytes)}: shrinking weights cannot help; use a smaller architecture"
        )
    else:
        factor = fit["shrink_factor"]
        recipe, why = likeliest_recipe(factor, recipes)
        short = [k for k in ("flash", "ram") if not fit[k]["ok"]]
        detail = "; ".join(
            f"{k.replace('ram', 'RAM')} needs {_mb(fit[k]['need'])}, has {_mb(fit[k]['have'])}" for k in short
        )
        hint = f"; try recipe {recipe!r} ({why})" if recipe else f"; {why}"
        reasons.append(f"fit: does not fit ({detail}): the weights must shrink {factor:.1f}x{hint}")

    # 2. latency
    cloud_ms = cloud_uj = None
    if network.available:
        seconds, cloud_uj = _upload(network, input_bytes)
        cloud_ms = seconds * 1e3 + estimate_latency(profile, cloud)["ms"]
        figures["cloud"] = {"latency_ms": cloud_ms, "radio_uj": cloud_uj, "network": network.name}
    budget = f"budget {latency_budget_ms:g} ms" if latency_budget_ms is not None else "no budget given"
    dev_ok = latency_budget_ms is None or dev_ms <= latency_budget_ms
    cloud_ok = cloud_ms is not None and (latency_budget_ms is None or cloud_ms <= latency_budget_ms)
    cloud_text = f"cloud over {network.name} {cloud_ms:.1f} ms" if cloud_ms is not None else "no cloud path"
    reasons.append(f"latency ({budget}): on {device.name} {dev_ms:.2f} ms, {cloud_text} (estimated)")

    # 3. energy
    if cloud_uj is not None:
        reasons.append(
            f"energy per inference: on device {dev_uj:,.1f} µJ vs radio upload of the "
            f"{input_bytes:,}-byte input {cloud_uj:,.1f} µJ (estimated)"
        )
    else:
        reasons.append(f"energy per inference: on device {dev_uj:,.1f} µJ (estimated); no radio in use")

    # 4. privacy, 5. reliability
    reasons.append(
        "privacy: --private, the input may not leave the device" if private else "privacy: the input may leave"
    )
    if not network.available:
        reasons.append("reliability: offline, no network to fall back on")
    else:
        reasons.append(f"reliability: cloud needs {network.name} (round trip {network.rtt_s * 1e3:.0f} ms) every time")

    if not fits:
        verdict: Verdict = "cloud" if cloud_allowed else "cannot-run"
    elif not cloud_allowed:
        verdict = "on-device"
    elif dev_ok and cloud_ok:
        verdict = "on-device" if dev_uj <= cloud_uj else "cloud"  # type: ignore[operator]
    elif dev_ok or not cloud_ok:
        verdict = "on-device" if dev_ok or dev_ms <= (cloud_ms or math.inf) else "cloud"
    else:
        verdict = "cloud"
    return Advice(verdict, reasons, device.name, network.name, factor, recipe, figures)


def advise(
    artifact: str | Path,
    device: str,
    network: str,
    *,
    latency_budget_ms: float | None = None,
    private: bool = False,
    model_name: str | None = None,
    devices_dir: str | Path | Sequence[str | Path] | None = None,
) -> Advice:
    """Profile `artifact` (no latency measurement) and advise where to run it."""
    from edgeshrink.measure.profile import profile as run_profile
    from edgeshrink.recipes import list_recipes

    dev, net = get_device(device, devices_dir), get_network(network, devices_dir)
    cloud = get_device(CLOUD_DEVICE, devices_dir)
    prof = run_profile(artifact, model_name=model_name, latency=False)
    return advise_profile(prof, dev, net, cloud, latency_budget_ms, private, list(list_recipes()))
