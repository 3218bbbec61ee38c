"""Checkpoints as an adversary meets them, on real runs: bit flips, truncation, pickle payloads, a full disk,
and resumes with a changed config. Each test checks what was kept on disk and what the user was told."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PRETRAIN_SETS, REPO, env, launch, run_args
from mlflow import MlflowClient

pytestmark = [pytest.mark.multiproc, pytest.mark.slow]
SETS = PRETRAIN_SETS[:2]


def _one_process(shards: Path, out: Path, *extra: str) -> list[str]:
    return run_args(shards, out, "--set", "parallel.ep_size=1", *extra, sets=SETS)


def _run(cmd: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)


def _train(args: list[str]) -> subprocess.CompletedProcess:
    return _run([sys.executable, str(REPO / "launch" / "train.py"), *args])


def _steps_logged(out: Path) -> list[int]:
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("nestor-tiny-cpu").experiment_id])
    return [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]


class Payload:
    """Unpickling this runs ``touch <marker>``: what a hostile checkpoint file does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _plant_payload(tag: Path, marker: Path) -> Path:
    """Replace the tag's dense file by a payload and update the manifest to match, as an attacker who can
    write the folder would: the checksum passes, only the loader stands between the payload and its run."""
    from nestor_ds.integrity import MANIFEST, digest

    target = tag / "mp_rank_00_model_states.pt"
    import torch

    torch.save({"module": {}, "payload": Payload(marker)}, target)
    manifest = json.loads((tag / MANIFEST).read_text())
    manifest["files"][target.name] = digest(target)
    (tag / MANIFEST).write_text(json.dumps(manifest))
    return target


@pytest.fixture(scope="module")
def trained(shards: Path, tmp_path_factory) -> Path:
    """A finished 1-process run with checkpoints at steps 2 and 4 (kept: 2)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    launch(
        "plain",
        1,
        _one_process(
            shards,
            out,
            "--set",
            "train.steps=4",
            "--set",
            "train.checkpoint_every=2",
            "--set",
            "train.keep_checkpoints=2",
        ),
    )
    return out


def _copy(run: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(run, to, ignore=shutil.ignore_patterns("run.lock"))
    return to


def test_bit_flip_in_an_expert_file_falls_back_to_the_older_intact_tag(shards: Path, tmp_path: Path) -> None:
    """2 ranks, experts sharded: one flipped bit in an expert file of the newest tag is found by the
    checksum, named, the tag set aside as *.damaged, and the run resumes from the older tag and finishes."""
    out = tmp_path / "run"
    base = run_args(shards, out, "--set", "train.checkpoint_every=2", "--set", "train.keep_checkpoints=2", sets=SETS)
    launch("torchrun", 2, base + ["--set", "train.steps=4"])
    expert = out / "checkpoints" / "step00000004" / "layer_1_expert_3_mp_rank_00_model_states.pt"
    data = bytearray(expert.read_bytes())
    data[len(data) // 2] ^= 0x01
    expert.write_bytes(bytes(data))

    done = launch("torchrun", 2, base + ["--set", "train.steps=6"])
    assert f"{expert} does not match its sha256" in done.stdout + done.stderr
    assert "resumed from" in done.stdout and "step00000002 at step 2" in done.stdout
    ckpts = out / "checkpoints"
    assert (ckpts / "step00000004.damaged" / expert.name).read_bytes() == bytes(data)  # kept for inspection
    assert (ckpts / "latest").read_text() == "step00000006"
    assert _steps_logged(out).count(5) == 1


def test_no_intact_checkpoint_left_stops_naming_the_file(trained: Path, tmp_path: Path, shards: Path) -> None:
    out = _copy(trained, tmp_path / "run")
    for tag in ("step00000002", "step00000004"):
        f = out / "checkpoints" / tag / "mp_rank_00_model_states.pt"
        f.write_bytes(f.read_bytes()[:1000])  # truncated
    done = _train(_one_process(shards, out, "--set", "train.steps=6"))
    assert done.returncode == 1, done.stderr[-3000:]
    assert "no intact checkpoint left" in done.stderr
    assert f"{out}/checkpoints/step00000004/mp_rank_00_model_states.pt has 1000 bytes" in done.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "latest",
        "step00000002.damaged",
        "step00000004.damaged",
    ]


def test_pickle_payloads_are_refused_everywhere_naming_the_file(trained: Path, tmp_path: Path, shards: Path) -> None:
    """Resume, evaluate --weights DIR, fine-tuning from train.init_from and `nestor-ds export`: none runs the
    payload; each names the file and the global it asked for."""
    out = _copy(trained, tmp_path / "run")
    marker = tmp_path / "pwned"
    target = _plant_payload(out / "checkpoints" / "step00000004", marker)
    attempts = {
        "resume": [
            sys.executable,
            str(REPO / "launch" / "train.py"),
            *_one_process(shards, out, "--set", "train.steps=6"),
        ],
        "evaluate": [
            sys.executable,
            "-m",
            "nestor_ds",
            "evaluate",
            "--weights",
            str(out / "checkpoints"),
            "--out",
            str(tmp_path / "eval"),
        ],
        "finetune": [
            sys.executable,
            str(REPO / "launch" / "train.py"),
            "--mode",
            "finetune",
            *_one_process(
                shards, tmp_path / "ft", "--set", "train.steps=1", "--set", f"train.init_from={out / 'checkpoints'}"
            ),
        ],
        "export": [
            sys.executable,
            "-m",
            "nestor_ds",
            "export",
            str(out / "checkpoints"),
            "--out",
            str(tmp_path / "exported"),
        ],
    }
    for what, cmd in attempts.items():
        done = _run(cmd)
        assert done.returncode != 0, what
        assert f"{target}: refused to load: it asks to unpickle the global posix.system" in done.stderr, (
            what,
            done.stderr[-3000:],
        )
        assert not marker.exists(), f"{what} ran the payload"
    # the same file loads fine where the user says they trust it: the payload is real
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


def test_resume_refuses_a_changed_model_and_applies_a_new_length_and_lr(
    trained: Path, tmp_path: Path, shards: Path
) -> None:
    out = _copy(trained, tmp_path / "run")
    refused = _train(
        _one_process(
            shards, out, "--set", "train.steps=6", "--set", "model.width=32", "--set", "train.micro_batch_per_rank=2"
        )
    )
    assert refused.returncode == 2
    assert "cannot change mid-run: model.width: 64 -> 32; train.micro_batch_per_rank: 4 -> 2" in refused.stderr
    assert (out / "checkpoints" / "latest").read_text() == "step00000004"

    done = _train(_one_process(shards, out, "--set", "train.steps=8", "--set", "train.optimizer.lr=5e-4"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resume: train.optimizer.lr changed from 0.001 to 0.0005 (applied)" in done.stdout
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("nestor-tiny-cpu").experiment_id])
    params = run.data.params
    assert params["resumed_at_step_4/train.steps"] == "4 -> 8"
    assert params["resumed_at_step_4/train.optimizer.lr"] == "0.001 -> 0.0005"
    assert params["resumed_at_step_4/total_steps"] == "8"
    # the lr after step 5 is the 8-step, lr 5e-4 schedule's, as if the run had been configured so from the start
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-4, total_steps=8, pct_start=0.2, cycle_momentum=False)
    for _ in range(5):
        opt.step()
        sched.step()
    lr = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/lr")}
    assert lr[5] == pytest.approx(sched.get_last_lr()[0], rel=1e-9)
    assert sorted(_steps_logged(out)) == list(range(1, 9))


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(shards: Path, tmp_path: Path) -> None:
    """The checkpoint folder on a 24 MiB tmpfs: the first (16 MiB) fits, the second does not. The run stops
    naming ENOSPC and the folder; `latest` still names the first, which is whole; the partial tag is gone."""
    from small_disk import small_disk

    with small_disk(tmp_path / "disk", "24m") as disk:
        out = tmp_path / "run"
        done = _train(
            _one_process(
                shards,
                out,
                "--set",
                "train.steps=3",
                "--set",
                "train.checkpoint_every=1",
                "--set",
                f"train.checkpoint_dir={disk}",
            )
        )
        assert done.returncode == 1, done.stderr[-3000:]
        assert f"writing checkpoint {disk}/step00000002 failed" in done.stderr
        assert "no space left on device" in done.stderr
        assert "'latest' still names it" in done.stderr
        assert (disk / "latest").read_text() == "step00000001"
        assert not (disk / "step00000002").exists()
        from nestor_ds.engine.checkpoint_integrity import problems

        assert problems(disk / "step00000001") == []
        client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
        (run,) = client.search_runs([client.get_experiment_by_name("nestor-tiny-cpu").experiment_id])
        assert run.info.status == "FAILED"
