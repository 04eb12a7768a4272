"""`edgeshrink report`: report.html of a run folder, with the device fit of the model rebuilt from it."""

from __future__ import annotations

from pathlib import Path

from edgeshrink.api.profile import DevicesDir, profile
from edgeshrink.report.html import read_report, write_report


def report(run_dir: str | Path, out: str | Path | None = None, devices_dir: DevicesDir = None) -> Path:
    """Write a self-contained report.html for a run folder (plots embedded); returns its path."""
    from edgeshrink.devices.catalogue import load_devices

    read_report(run_dir)  # a folder without report.json fails before anything is measured
    costs = profile(run_dir, latency=False).costs
    return write_report(run_dir, costs, list(load_devices(devices_dir).values()), out)
