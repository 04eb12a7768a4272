import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from helpers import cli, loaders

import edgeshrink
from edgeshrink.api.report import report as write_report
from edgeshrink.tasks.zoo import create_model

DIGITS = {"task": "digits-cnn", "model": "digits-cnn"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    recipe = tmp_path_factory.mktemp("recipe") / "tiny.toml"
    recipe.write_text(
        '[[stages]]\ntype = "prune"\nmethod = "sparsity"\nsparsity = 0.8\n[stages.finetune]\nepochs = 1\n'
        '[[stages]]\ntype = "share"\nbits = 4\n[stages.finetune]\nepochs = 1\n[encode]\ncoding = "huffman"\n'
    )
    torch.manual_seed(0)
    train, val = loaders()
    out = tmp_path_factory.mktemp("run")
    edgeshrink.compress(
        create_model("digits-cnn"), recipe, train_loader=train, val_loader=val, out=out, arch=DIGITS, progress=False
    )
    return out


def test_report_json_holds_weight_histograms_per_stage(run_dir):
    hist = json.loads((run_dir / "report.json").read_text())["histograms"]
    assert [s["stage"] for s in hist["stages"]] == ["baseline", "prune", "share"]
    share = hist["stages"][2]["layers"]["fc1"]
    base = hist["stages"][0]["layers"]["fc1"]
    assert sum(base["counts"]) == 32 * 4 * 4 * 128 and base["zeros"] == 0
    assert sum(share["counts"]) + share["zeros"] == 32 * 4 * 4 * 128
    assert share["distinct"] <= 16  # 4-bit sharing: at most 16 shared values
    assert np.isclose(share["zeros"] / (32 * 4 * 4 * 128), 0.8, atol=0.01)


def test_report_html_is_self_contained(run_dir):
    path = write_report(run_dir)
    text = path.read_text()
    assert text.count("data:image/png;base64,") == 4
    assert not re.search(r"(src|href)=\"(https?:)?//", text)  # no external resources
    assert "<script" not in text
    assert "dense fits" in text and "fc1" in text


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing in CI: .ci/run should have installed it")
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")
    page = write_report(run_dir)
    shot = tmp_path / "shot.png"
    run = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1200,2400",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.is_file(), run.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert pixels.std() > 0.01  # not a blank page
    console = [ln for ln in run.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console


def test_report_needs_a_run_folder(tmp_path):
    run = cli("report", tmp_path)
    assert run.returncode == 2 and "has no report.json" in run.stderr
