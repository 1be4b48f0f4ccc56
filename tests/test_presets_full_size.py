"""Every experiment preset runs end to end on full-size Fashion-MNIST through the CLI and writes
its report section (one epoch and one seed here; the README has the full runs)."""

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

FASHION = Path("/usr/share/datasets/fashion-mnist")

# preset -> report sections its one-epoch run must have
SECTIONS = {
    "memorization": ["memorisation", "model-size"],
    "zero-loss": ["zero-loss", "model-size"],
    "sample-size": ["sample-size", "model-size"],
    "noise-zoo": ["setup-ranking", "fitting-noise", "calibration", "robustness", "label-issues"],
}


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("preset", list(SECTIONS))
def test_each_preset_runs_on_full_fashion_mnist_and_reports_its_section(tmp_path, preset):
    if not FASHION.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    out = tmp_path / preset
    cmd = [sys.executable, "-m", "noisebench", "run", "--preset", preset, "--out", str(out)]
    cmd += ["--dataset", "fashion-mnist", "--epochs", "1", "--seeds", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]

    db = sqlite3.connect(out / "results.sqlite")
    statuses = {s for (s,) in db.execute("SELECT status FROM runs")}
    sizes = {int(v) for (v,) in db.execute("SELECT value FROM metrics WHERE name = 'train_size'")}
    db.close()
    assert statuses == {"done"}
    assert max(sizes) >= 60000  # the whole training set, or more with diluted labels
    html = (out / "report.html").read_text()
    ids = set(re.findall(r'<h2 id="([^"]+)"', html))
    assert set(SECTIONS[preset]) <= ids, ids
