"""On the device or in the cloud? An answer with its reasons in order: fit, latency against the budget,
energy (computing on the device vs sending the input over the radio), privacy, reliability.

`private` (the input may not leave the device) and an offline network never answer cloud. The fit is
that of the file the device's runtime loads (devices/estimate.py), named in the first reason.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from edgeshrink.devices.estimate import DeviceEstimate, Fit, decodes_weights, estimate_latency, estimate_on_device
from edgeshrink.devices.schema import Device, Network
from edgeshrink.measure.profile import ModelCosts

CLOUD_DEVICE = "cloud-server"

# Size reduction each built-in recipe typically gives in flash (the file) and in RAM (the weights a
# dense runtime holds), least aggressive first. Only recipes present in the registry are ever named.
TYPICAL_FACTORS: dict[str, tuple[float, float, str]] = {
    "fp16": (2.0, 2.0, "16-bit floats for 32-bit ones"),
    "int8": (4.0, 4.0, "8-bit integers for 32-bit floats"),
    "int8-qat": (4.0, 4.0, "8-bit integers, with quantization-aware training"),
    "w4a8": (7.0, 4.0, "4-bit weights (8-bit first and last layers): INT4 in ONNX files, int8 bytes in LiteRT"),
    "deep-compression": (
        35.0,
        1.0,
        "Han et al., ICLR 2016: 35x (AlexNet) to 49x (VGG-16) smaller files; decoded to dense in RAM",
    ),
}

Verdict = Literal["on-device", "cloud", "cannot-run"]


@dataclass
class CloudPath:
    latency_ms: float
    radio_uj: float
    network: str


@dataclass
class Advice:
    verdict: Verdict
    reasons: list[str]
    device: str
    network: str
    file: str
    runtime: str
    on_device: DeviceEstimate
    cloud: CloudPath | None = None
    shrink_factor: float | None = None
    recipe: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def likeliest_recipe(flash_factor: float, available: Sequence[str], ram_factor: float = 1.0) -> tuple[str | None, str]:
    """The least aggressive available recipe that typically shrinks flash by `flash_factor` and the
    weights in RAM by `ram_factor`, else the strongest one."""
    known = [(TYPICAL_FACTORS[r][0], TYPICAL_FACTORS[r][1], r) for r in TYPICAL_FACTORS if r in available]
    if not known:
        return None, "no built-in recipe with a known typical reduction is installed"
    for flash, ram, name in sorted(known):
        if flash >= flash_factor and ram >= ram_factor:
            return name, f"typically {flash:g}x smaller in flash, {ram:g}x in RAM ({TYPICAL_FACTORS[name][2]})"
    flash, ram, name = max(known, key=lambda k: (min(k[0] / flash_factor, k[1] / ram_factor), k[0]))
    return name, (
        f"typically {flash:g}x smaller in flash and {ram:g}x in RAM, short of the "
        f"{flash_factor:.1f}x / {ram_factor:.1f}x needed: also shrink the architecture"
    )


def _upload(network: Network, nbytes: int) -> tuple[float, float]:
    """(seconds, µJ) to send `nbytes` and wait one round trip for the answer."""
    seconds = nbytes / network.uplink_bytes_per_s / network.duty_cycle + network.rtt_s
    energy = nbytes * network.tx_nj_per_byte / 1e3 + network.rtt_s * network.wait_power_w * 1e6
    return seconds, energy


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _fit_reason(
    fit: Fit, costs: ModelCosts, device: Device, recipes: Sequence[str]
) -> tuple[str, float | None, str | None]:
    d = fit.deployment
    where = f"{d.file} in {d.runtime}"
    if fit.flash.ok and fit.ram.ok:
        return (
            f"fit ({where}): {_mb(fit.flash.need)} in flash of {_mb(fit.flash.have)}; weights + peak activations "
            f"{_mb(fit.ram.need)} in RAM of {_mb(fit.ram.have)} ({d.note})",
            None,
            None,
        )
    if not fit.activations_alone_fit and decodes_weights(costs):
        peak = costs.activations.peak_bytes
        return (
            f"fit ({where}): the arena needs {_mb(peak)} at {costs.activations.at}, of RAM {_mb(device.ram_bytes)}: "
            "TFLite Micro decodes that layer's compressed weights into RAM before it runs, so its dense int8 "
            "weights must fit; shrink that layer (channels recipe) or choose a device with more RAM",
            None,
            None,
        )
    if not fit.activations_alone_fit:
        peak = costs.activations.peak_bytes
        return (
            f"fit ({where}): peak activations {_mb(peak)} alone exceed RAM {_mb(device.ram_bytes)}: shrinking "
            "weights cannot help; use a smaller architecture",
            None,
            None,
        )
    flash_factor = fit.flash.need / fit.flash.have
    ram_room = device.ram_bytes - costs.activations.peak_bytes
    ram_factor = d.ram_weight_bytes / ram_room if ram_room > 0 else math.inf
    recipe, why = likeliest_recipe(max(flash_factor, 1.0), recipes, max(ram_factor, 1.0))
    short = [(k, n) for k, n in (("flash", fit.flash), ("RAM", fit.ram)) if not n.ok]
    detail = "; ".join(f"{k} needs {_mb(n.need)}, has {_mb(n.have)}" for k, n in short)
    hint = f"; try recipe {recipe!r} ({why})" if recipe else f"; {why}"
    text = f"fit ({where}): does not fit ({detail}; {d.note}): the weights must shrink {fit.shrink_factor:.1f}x{hint}"
    return text, fit.shrink_factor, recipe


def _verdict(
    fits: bool, cloud_allowed: bool, dev_ok: bool, cloud_ok: bool, dev_ms: float, cloud_ms, dev_uj, cloud_uj
) -> Verdict:
    if not fits:
        return "cloud" if cloud_allowed else "cannot-run"
    if not cloud_allowed:
        return "on-device"
    if dev_ok and cloud_ok:
        return "on-device" if dev_uj <= cloud_uj else "cloud"
    if dev_ok or not cloud_ok:
        return "on-device" if dev_ok or dev_ms <= (cloud_ms or math.inf) else "cloud"
    return "cloud"


def advise_costs(
    costs: ModelCosts,
    device: Device,
    network: Network,
    cloud: Device,
    latency_budget_ms: float | None = None,
    private: bool = False,
    recipes: Sequence[str] = (),
) -> Advice:
    """The decision from a measured model; pure: no measurement here."""
    est = estimate_on_device(costs, device)
    dev_ms, dev_uj = est.latency.ms, est.energy.uj
    input_bytes = costs.activations.input_bytes
    cloud_allowed = network.available and not private
    fit_text, factor, recipe = _fit_reason(est.fit, costs, device, recipes)
    reasons = [fit_text]
    path = None
    if network.available:
        seconds, radio_uj = _upload(network, input_bytes)
        path = CloudPath(seconds * 1e3 + estimate_latency(costs, cloud).ms, radio_uj, network.name)
    budget = f"budget {latency_budget_ms:g} ms" if latency_budget_ms is not None else "no budget given"
    dev_ok = latency_budget_ms is None or dev_ms <= latency_budget_ms
    cloud_ok = path is not None and (latency_budget_ms is None or path.latency_ms <= latency_budget_ms)
    cloud_text = f"cloud over {network.name} {path.latency_ms:.1f} ms" if path is not None else "no cloud path"
    reasons.append(f"latency ({budget}): on {device.name} {dev_ms:.2f} ms, {cloud_text} (estimated)")
    if path is not None:
        reasons.append(
            f"energy per inference: on device {dev_uj:,.1f} µJ vs radio upload of the "
            f"{input_bytes:,}-byte input {path.radio_uj:,.1f} µJ (estimated)"
        )
    else:
        reasons.append(f"energy per inference: on device {dev_uj:,.1f} µJ (estimated); no radio in use")
    reasons.append(
        "privacy: --private, the input may not leave the device" if private else "privacy: the input may leave"
    )
    if not network.available:
        reasons.append("reliability: offline, no network to fall back on")
    else:
        reasons.append(f"reliability: cloud needs {network.name} (round trip {network.rtt_s * 1e3:.0f} ms) every time")
    fits = est.fit.flash.ok and est.fit.ram.ok
    verdict = _verdict(
        fits, cloud_allowed, dev_ok, cloud_ok, dev_ms, path and path.latency_ms, dev_uj, path and path.radio_uj
    )
    d = est.fit.deployment
    return Advice(verdict, reasons, device.name, network.name, d.file, d.runtime, est, path, factor, recipe)
