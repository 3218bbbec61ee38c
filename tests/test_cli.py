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
    out = _run(
        "config", "--config", "configs/tiny_cpu.yaml", "--ds-config", "ds_configs/cpu_fp32.json", "--world-size", "2"
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["train_batch_size"] == 8


def test_config_error_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "configs" / "tiny_cpu.yaml").read_text().replace("patch_size: 8", "patch_size: 5"))
    out = _run("config", "--config", str(bad))
    assert out.returncode == 2
    assert "bad.yaml" in out.stderr and "multiple of patch_size=5" in out.stderr
    assert "Traceback" not in out.stderr


def _one_line_error(out: subprocess.CompletedProcess, *words: str) -> None:
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    error = [line for line in out.stderr.splitlines() if "error:" in line]
    assert error and all(w in out.stderr for w in words), out.stderr


def test_version() -> None:
    from nestor_ds import __version__

    out = _run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"nestor-ds {__version__}"


def test_both_ds_config_spellings_and_set_with_list_indices() -> None:
    for flag in ("--ds-config", "--ds_config"):
        out = _run("config", "--config", "configs/tiny_cpu.yaml", flag, "ds_configs/cpu_fp32.json", "--world-size", "2")
        assert out.returncode == 0, out.stderr
    out = _run("config", "--config", "configs/tiny_cpu.yaml", "--set", "data.datasets.1.weight=2.5")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["data"]["datasets"][1]["weight"] == 2.5
    _one_line_error(
        _run("config", "--config", "configs/tiny_cpu.yaml", "--set", "data.datasets.9.weight=2"),
        "data.datasets is a list of",
        "'9'",
    )


def test_bad_values_are_one_line_errors(tmp_path: Path) -> None:
    _one_line_error(
        _run("params", "--config", "configs/tiny_cpu.yaml", "--ep-size", "7"),
        "parallel.ep_size=7 does not divide model.moe.experts=4",
    )
    _one_line_error(
        _run("data", "shard", "--dataset", "nope", "--source", str(tmp_path), "--out", str(tmp_path / "o")),
        "unknown data set 'nope'",
    )
    _one_line_error(
        _run("config", "--config", "configs/tiny_cpu.yaml", "--set", "data.datasets=[{name: nope}]"),
        "unknown data set 'nope'",
    )


def test_compare_writes_nothing_the_user_did_not_ask_for(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "nestor_ds", "compare"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**__import__("os").environ, "MLFLOW_TRACKING_URI": ""},
    )
    _one_line_error(out, "no MLflow store at runs/mlflow.db")
    assert list(tmp_path.iterdir()) == []  # no store, no runs/compare.md dropped into the working directory


def test_shipped_configs_work_from_any_directory_and_init_copies_them(tmp_path: Path) -> None:
    def here(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "nestor_ds", *args], capture_output=True, text=True, cwd=tmp_path)

    out = here(
        "config", "--config", "configs/tiny_cpu.yaml", "--ds-config", "ds_configs/cpu_fp32.json", "--world-size", "2"
    )
    assert out.returncode == 0, out.stderr
    out = here("init", "mine")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "mine" / "configs" / "nestor_tiny.yaml").is_file()
    assert (tmp_path / "mine" / "ds_configs" / "zero2_bf16.json").is_file()
    assert (tmp_path / "mine" / "studies" / "quick.yaml").is_file()
    (tmp_path / "mine" / "configs" / "tiny_cpu.yaml").write_text("edited")
    assert here("init", "mine").returncode == 0
    assert (tmp_path / "mine" / "configs" / "tiny_cpu.yaml").read_text() == "edited"  # never overwritten
