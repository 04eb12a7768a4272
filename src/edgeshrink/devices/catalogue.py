"""The device catalogue: built-in TOML files plus the user's own.

User devices (and a user `networks.toml`) are read, in order of precedence, from folders passed as
`devices_dir`, from `$EDGESHRINK_DEVICES` (folders separated by the path separator) and from
`$XDG_CONFIG_HOME/edgeshrink/devices` (default `~/.config/edgeshrink/devices`). A user file with the
name of a built-in device replaces it. `this-machine` comes from `edgeshrink devices calibrate`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from edgeshrink.devices.schema import Device, Network, parse
from edgeshrink.errors import ConfigError

THIS_MACHINE = "this-machine"
NETWORKS_FILE = "networks.toml"


def user_devices_dir() -> Path:
    """Where `devices calibrate` writes and user device files are looked for by default."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edgeshrink" / "devices"


def device_dirs(devices_dir: str | Path | Sequence[str | Path] | None = None) -> list[Path]:
    """User folders, highest precedence first."""
    given = [] if devices_dir is None else [devices_dir] if isinstance(devices_dir, str | Path) else list(devices_dir)
    env = [p for p in os.environ.get("EDGESHRINK_DEVICES", "").split(os.pathsep) if p]
    return [Path(p) for p in [*given, *env]] + [user_devices_dir()]


def _read_toml(path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def _builtin_files() -> list:
    folder = resources.files("edgeshrink.devices").joinpath("catalogue")
    return sorted((f for f in folder.iterdir() if f.name.endswith(".toml")), key=lambda f: f.name)


def _files(dirs: list[Path]) -> list:
    """Built-in files first, then user folders from lowest to highest precedence (later ones win)."""
    files = _builtin_files()
    for d in reversed(dirs):
        if d.is_dir():
            files += sorted(d.glob("*.toml"))
    return files


def load_devices(devices_dir: str | Path | Sequence[str | Path] | None = None) -> dict[str, Device]:
    """Every device, by name (user files override built-ins of the same name)."""
    devices: dict[str, Device] = {}
    for f in _files(device_dirs(devices_dir)):
        if f.name == NETWORKS_FILE:
            continue
        device = parse(Device, _read_toml(f), str(f))
        devices[device.name] = device
    return devices


def load_networks(devices_dir: str | Path | Sequence[str | Path] | None = None) -> dict[str, Network]:
    """Every network profile, by name (tables of networks.toml files)."""
    networks: dict[str, Network] = {}
    for f in _files(device_dirs(devices_dir)):
        if f.name != NETWORKS_FILE:
            continue
        for name, table in _read_toml(f).items():
            if not isinstance(table, dict):
                raise ConfigError(f"{f}: {name!r} must be a table [{name}]")
            networks[name] = parse(Network, {"name": name, **table}, f"{f} [{name}]")
    return networks


def get_device(name: str, devices_dir: str | Path | Sequence[str | Path] | None = None) -> Device:
    devices = load_devices(devices_dir)
    if name in devices:
        return devices[name]
    if name == THIS_MACHINE:
        raise ConfigError("device 'this-machine' is not calibrated yet: run `edgeshrink devices calibrate` first")
    known = ", ".join([*sorted(devices), THIS_MACHINE])
    raise ConfigError(
        f"unknown device {name!r}; known devices: {known} (add your own TOML file in {user_devices_dir()})"
    )


def get_network(name: str, devices_dir: str | Path | Sequence[str | Path] | None = None) -> Network:
    networks = load_networks(devices_dir)
    if name not in networks:
        raise ConfigError(f"unknown network {name!r}; known networks: {', '.join(networks)}")
    return networks[name]
