"""A built wheel works without the checkout: installed (non-editable) into a folder of its own, it finds its
shipped configs, ``nestor-ds init`` copies them, and ``python -m nestor_ds.launch`` trains with them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "nestor_ds", "configs", "ds_configs", "studies")


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_the_wheel_installs_finds_its_configs_and_trains(tmp_path: Path, shared_shards) -> None:
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run(
        [*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist")],
        tmp_path,
        dict(os.environ),
    )
    (wheel,) = (tmp_path / "dist").glob("nestor_ds-*.whl")
    site = tmp_path / "site"
    _run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], tmp_path, dict(os.environ))

    work = tmp_path / "work"  # nowhere near the checkout
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    where = _run([sys.executable, "-c", "import nestor_ds; print(nestor_ds.__file__)"], work, env).stdout.strip()
    assert where.startswith(str(site)), where
    init = _run([sys.executable, "-m", "nestor_ds", "init", "project"], work, env)
    assert "files copied" in init.stdout
    assert (work / "project" / "configs" / "tiny_cpu.yaml").is_file()
    assert (work / "project" / "ds_configs" / "cpu_fp32.json").is_file()
    assert (work / "project" / "studies" / "quick.yaml").is_file()

    shards = shared_shards(["ns2d_fno_1e-3", "swe_pdb"], 8)  # the studies' and Slurm tests' data
    out = work / "run"
    _run(
        [
            sys.executable,
            "-m",
            "nestor_ds.launch",
            "--config",
            "project/configs/tiny_cpu.yaml",
            "--ds_config",
            "project/ds_configs/cpu_fp32.json",
            "--set",
            f"data.root={shards}",
            "--set",
            "data.datasets=[{name: ns2d_fno_1e-3}]",
            "--set",
            "parallel.ep_size=1",
            "--set",
            "train.steps=2",
            "--set",
            f"train.output_dir={out}",
        ],
        work,
        env,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "finished" and "eval/ns2d_fno_1e-3/l2re_one_step" in summary
    # shipped names resolve inside the installed package too (no project folder needed)
    cfg = _run([sys.executable, "-m", "nestor_ds", "config", "--config", "configs/tiny_cpu.yaml"], work, env)
    assert json.loads(cfg.stdout)["model"]["variant"] == "nestor"
