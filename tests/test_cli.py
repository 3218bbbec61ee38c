"""The console script, run as a user runs it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nestor_ds", *args], capture_output=True, text=True, cwd=REPO)


def test_help_lists_commands() -> None:
    out = _run("--help")
    assert out.returncode == 0
    for cmd in ("config", "params"):
        assert cmd in out.stdout


def test_config_prints_derived_deepspeed_json() -> None:
    out = _run("config", "--config", "configs/tiny_cpu.yaml", "--ds-config", "ds_configs/cpu_fp32.json",
               "--world-size", "2")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["train_batch_size"] == 8


def test_config_error_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "configs" / "tiny_cpu.yaml").read_text().replace("patch_size: 8", "patch_size: 5"))
    out = _run("config", "--config", str(bad))
    assert out.returncode == 2
    assert "bad.yaml" in out.stderr and "not divisible by patch_size=5" in out.stderr
    assert "Traceback" not in out.stderr
