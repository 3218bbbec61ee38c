"""The training job as users run it: real launchers, real gloo ranks, real shards, a real MLflow store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HELD_OUT, PRETRAIN_SETS, REPO, env, launch, launch_and_kill_after_checkpoint, run_args
from mlflow import MlflowClient

from nestor_ds.config import load_config

pytestmark = [pytest.mark.multiproc, pytest.mark.slow]
STEPS = 60


@pytest.fixture(scope="module")
def pretrained(shards: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain")
    done = launch(
        "deepspeed",
        2,
        run_args(
            shards,
            out,
            "--set",
            f"train.steps={STEPS}",
            "--set",
            "train.eval_every=30",
            "--set",
            "train.checkpoint_every=30",
            "--set",
            "tracking.run_name=pretrain",
            "--set",
            "train.count_host_syncs=true",
        ),
    )
    (out / "launcher.log").write_text(done.stdout + done.stderr)
    return out


def _history(out: Path) -> dict[int, float]:
    return {int(h["step"]): h["train/loss"] for h in json.loads((out / "eval" / "history.json").read_text())}


def test_deepspeed_launcher_ep2_pretraining(pretrained: Path) -> None:
    losses = _history(pretrained)
    first, last = sum(losses[s] for s in range(1, 11)) / 10, sum(losses[s] for s in range(STEPS - 9, STEPS + 1)) / 10
    assert last < 0.8 * first, (first, last)
    # a whole training step (MoE all-to-alls, backward, clipping, fused Adam) reads from the device the finite-loss
    # guard's flag, agreed by all ranks, and (dropless, ep 2) each MoE layer's exchanged route counts
    history = json.loads((pretrained / "eval" / "history.json").read_text())
    blocks = load_config(REPO / "configs" / "tiny_cpu.yaml").model.blocks
    log = (pretrained / "launcher.log").read_text()
    assert "(0 bytes hashed before step 1)" in log, log[-3000:]  # shards are hashed when first opened
    assert len(history) == STEPS and all(h["perf/host_syncs"] == 1 + blocks for h in history)
    assert all(0 < h["perf/alltoall_share"] < 1 and h["perf/alltoall_mib_per_s"] > 0 for h in history)  # ep 2
    table = json.loads((pretrained / "eval" / "eval_table.json").read_text())
    assert [r["dataset"] for r in table["datasets"]] == PRETRAIN_SETS
    assert all(0 < r["l2re_one_step"] < 2 and r["trajectories"] == 4 for r in table["datasets"])
    assert (pretrained / "eval" / "eval_table.csv").read_text().startswith("dataset,")

    client = MlflowClient(f"sqlite:///{pretrained / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("nestor-tiny-cpu").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "pretrain"
    assert run.data.params["world_size"] == "2" and run.data.params["ep_size"] == "2"
    assert run.data.params["config.model.moe.experts"] == "4"
    assert run.data.params["ds_config.train_batch_size"] == "8"
    metrics = run.data.metrics
    for key in (
        "train/loss",
        "train/aux_image",
        "load/image/expert0",
        "perf/samples_per_s",
        f"eval/{PRETRAIN_SETS[0]}/l2re_rollout",
        "train/swe_pdb/l2re",
    ):
        assert key in metrics, key
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == STEPS
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert {"eval/eval_table.csv", "eval/experts_image.png", "eval/rollout_errors.png"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "config")} >= {
        "config/tiny_cpu.yaml",
        "config/config.resolved.yaml",
    }
    resolved = client.download_artifacts(run.info.run_id, "config/config.resolved.yaml")
    assert "count_host_syncs: true" in Path(resolved).read_text()  # the --set overrides, applied
    model_files = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/model.safetensors", "model/config.yaml"} <= model_files  # the run leads to its weights
    channels = json.loads((pretrained / "model" / "channels.json").read_text())  # users may name channels
    assert list(channels) == PRETRAIN_SETS and channels["swe_pdb"] == ["h"]
    tags = run.data.tags
    assert tags["world_size"] == "2" and tags["ep_size"] == "2" and tags["device"] == "cpu"
    assert (
        tags["git_commit"]
        == subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    )
    assert tags["version.torch"] == __import__("torch").__version__
    # per-expert checkpoint files of the ep_size=2 run
    assert len(list((pretrained / "checkpoints" / "step00000060").glob("layer_*_expert_*"))) == 2 * 4


@pytest.fixture
def http_shards(shards: Path):
    """The same shard folder served by a real HTTP server on 127.0.0.1, as a cluster's object store would."""
    from multiproc import free_port

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(shards)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import time
        import urllib.request

        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/{PRETRAIN_SETS[0]}/train/manifest.json", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_killed_run_over_http_resumes_with_the_local_runs_losses(
    shards: Path, http_shards: str, tmp_path: Path
) -> None:
    common = (
        "--set",
        "train.steps=12",
        "--set",
        "train.checkpoint_every=4",
        "--set",
        "train.eval_every=100",
        "--set",
        "train.eval_trajectories=1",
        "--set",
        "train.keep_checkpoints=2",
    )
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    launch("torchrun", 2, run_args(shards, straight, *common))
    kept = sorted(p.name for p in (straight / "checkpoints").iterdir() if p.is_dir())
    assert kept == ["step00000008", "step00000012"]  # the newest K=2 only
    # the killed and resumed run streams every shard over HTTP
    launch_and_kill_after_checkpoint(2, run_args(http_shards, killed, *common), killed)
    resumed_from = int((killed / "checkpoints" / "latest").read_text().strip().removeprefix("step"))
    launch("torchrun", 2, run_args(http_shards, killed, *common))
    a, b = _history(straight), _history(killed)
    assert sorted(b) == list(range(resumed_from + 1, 13))
    for step in b:
        assert b[step] == a[step], (step, a[step], b[step])


def test_finetune_beats_scratch_and_compare(pretrained: Path, shards: Path, tmp_path: Path) -> None:
    """Fine-tuned with a shorter t_in than pre-trained (3 for 4: the time aggregation sliced by its named rule),
    the held-out set is learned better than from scratch, and ``compare`` shows the two runs."""
    common = (
        "--set",
        "model.t_in=3",
        "--set",
        "train.steps=30",
        "--set",
        "train.eval_every=100",
        "--set",
        "data.noise_scale=0",
        "--set",
        "train.aux_weight_image=0.01",
        "--set",
        "train.aux_weight_token=0.005",
    )
    tuned, scratch = tmp_path / "tuned", tmp_path / "scratch"
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    common += ("--set", f"tracking.uri={store}", "--set", "tracking.experiment=heldout")
    tuned_run = launch(
        "torchrun",
        2,
        run_args(
            shards,
            tuned,
            "--mode",
            "finetune",
            "--weights",
            str(pretrained / "checkpoints"),
            "--set",
            "tracking.run_name=finetune",
            "--set",
            "train.freeze=[routers]",
            *common,
            sets=[HELD_OUT],
        ),
    )
    assert "fine-tuning rule time_agg=slice: t_in 4 -> 3" in tuned_run.stdout + tuned_run.stderr
    launch("torchrun", 2, run_args(shards, scratch, "--set", "tracking.run_name=scratch", *common, sets=[HELD_OUT]))
    score = {
        name: json.loads((d / "eval" / "eval_table.json").read_text())["datasets"][0]
        for name, d in (("tuned", tuned), ("scratch", scratch))
    }
    print("fine-tuned vs scratch on", HELD_OUT, score)
    assert score["tuned"]["l2re_one_step"] < score["scratch"]["l2re_one_step"]

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "nestor_ds",
            "compare",
            "finetune",
            "scratch",
            "--tracking-uri",
            store,
            "--experiment",
            "heldout",
            "--markdown",
            str(tmp_path / "compare.md"),
        ],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "finetune" in out.stdout and "scratch" in out.stdout
    assert f"eval/{HELD_OUT}/l2re_one_step" in out.stdout
    assert f"{score['tuned']['l2re_one_step']:.4g}" in out.stdout
    for baseline in ("persistence_one_step", "linear_rollout", "ratio_rollout"):  # the baselines come along
        assert f"eval/{HELD_OUT}/{baseline}" in out.stdout
    assert f"{score['tuned']['persistence_one_step']:.4g}" in out.stdout
    assert "mode" in out.stdout and "config.train.freeze" in out.stdout  # the keys that differ
    assert "config.model.width" not in out.stdout  # ... and only those
    assert (tmp_path / "compare.md").read_text().count("|") > 10


def _hashes(folder: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "evaluation" not in p.parts
    }


def test_single_process_run_and_evaluate_command(pretrained: Path, shards: Path, tmp_path: Path) -> None:
    single = tmp_path / "single"
    launch("plain", 1, run_args(shards, single, "--set", "parallel.ep_size=1", "--set", "train.steps=3"))
    assert (single / "eval" / "eval_table.json").is_file()
    # the ep_size=2 checkpoint, evaluated in one plain process (experts consolidated onto it), with the config it
    # was trained with (no --config), into its own folder: the training run's files stay as they were
    before = _hashes(pretrained)
    out = subprocess.run(
        [sys.executable, "-m", "nestor_ds", "evaluate", "--weights", str(pretrained / "checkpoints")],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert "1-step persist.  linear  ratio" in out.stdout  # the model beside its baselines
    assert _hashes(pretrained) == before
    mine = json.loads((pretrained / "evaluation" / "eval" / "eval_table.json").read_text())["datasets"]
    theirs = json.loads((pretrained / "eval" / "eval_table.json").read_text())["datasets"]
    assert [a["dataset"] for a in mine] == [b["dataset"] for b in theirs] == PRETRAIN_SETS
    for a, b in zip(mine, theirs):
        assert a["l2re_one_step"] == pytest.approx(b["l2re_one_step"], rel=1e-4)
        assert a["l2re_rollout"] == pytest.approx(b["l2re_rollout"], rel=1e-4)
        assert a["persistence_rollout"] == pytest.approx(b["persistence_rollout"], rel=1e-6)


def test_run_killed_by_an_exception_is_failed_in_mlflow(shards: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "shards"
    shutil.copytree(shards / PRETRAIN_SETS[0], broken / PRETRAIN_SETS[0])
    for tar in (broken / PRETRAIN_SETS[0] / "train").glob("*.tar"):
        tar.write_bytes(tar.read_bytes()[:3000])  # truncated: the loader raises in the first step
    out = tmp_path / "run"
    args = run_args(
        broken,
        out,
        "--set",
        "parallel.ep_size=1",
        "--set",
        "train.steps=3",
        "--set",
        "data.verify_checksums=false",
        sets=[PRETRAIN_SETS[0]],
    )
    with pytest.raises(AssertionError, match="unreadable tar"):
        launch("plain", 1, args)
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("nestor-tiny-cpu").experiment_id])
    assert run.info.status == "FAILED"
    assert (
        run.data.tags["git_commit"]
        == subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    )


def test_non_finite_losses_are_skipped_then_stop_the_run(shards: Path, tmp_path: Path) -> None:
    """lr=1e6: the loss turns NaN after the first step. Both ranks skip those micro-steps together, the run stops
    after train.max_bad_steps of them naming where, exits non-zero, is FAILED in MLflow, and no kept checkpoint
    holds a non-finite weight."""
    import torch

    from nestor_ds.safe_load import torch_load

    out = tmp_path / "nan"
    args = run_args(
        shards,
        out,
        "--set",
        "train.steps=20",
        "--set",
        "train.optimizer.lr=1e6",
        "--set",
        "train.checkpoint_every=1",
        "--set",
        "train.max_bad_steps=2",
    )
    with pytest.raises(AssertionError, match="non-finite loss in 2 consecutive steps") as failed:
        launch("torchrun", 2, args)
    assert "Last good checkpoint: step0000000" in str(failed.value)
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("nestor-tiny-cpu").experiment_id])
    assert run.info.status == "FAILED"
    tags = sorted(p.name for p in (out / "checkpoints").iterdir() if p.is_dir())
    assert tags
    for tag in tags:
        for f in (out / "checkpoints" / tag).glob("*model_states.pt"):
            state = torch_load(f)
            weights = state.get("module", state)
            assert all(torch.isfinite(v).all() for v in weights.values() if torch.is_tensor(v)), (tag, f.name)


def test_signal_checkpoints_at_a_step_boundary_and_the_rerun_finishes(shards: Path, tmp_path: Path) -> None:
    """What Slurm's warning signal does, without Slurm: one rank gets SIGUSR1, all stop at the same step."""
    import signal
    import time

    import psutil
    from multiproc import torchrun_cmd

    out = tmp_path / "run"
    args = run_args(
        shards,
        out,
        "--set",
        "train.steps=40",
        "--set",
        "train.checkpoint_every=1000",
        "--set",
        "train.eval_every=1000",
        "--set",
        "train.eval_trajectories=1",
    )
    log = tmp_path / "first.log"
    cmd = torchrun_cmd(REPO / "launch" / "train.py", 2, *args)
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env={**env(), "PYTHONUNBUFFERED": "1"}, stdout=f, stderr=f)
        deadline = time.time() + 300
        while "step 3/40" not in log.read_text():
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "train.py" in " ".join(p.cmdline())]
        assert len(workers) == 2
        workers[-1].send_signal(signal.SIGUSR1)  # one rank only: the stop must still be collective
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "preempted at step" in text and "not under Slurm" in text
    stopped = int(text.split("preempted at step ")[1].split(":")[0])
    assert 3 <= stopped < 40
    assert (out / "checkpoints" / "latest").read_text().strip() == f"step{stopped:08d}"
    launch("torchrun", 2, args)
    assert sorted(_history(out)) == list(range(stopped + 1, 41))
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("nestor-tiny-cpu").experiment_id])
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(steps) == list(range(1, 41))  # one MLflow run, every step exactly once
    assert run.info.status == "FINISHED"


def test_compiled_blocks_train_as_eager_ones(shards: Path, tmp_path: Path) -> None:
    """model.compile=true: the same losses at ep_size 2 over gloo (the graph breaks around the all-to-all)."""
    losses = {}
    for compiled in ("false", "true"):
        out = tmp_path / f"compile_{compiled}"
        run = launch(
            "torchrun",
            2,
            run_args(
                shards,
                out,
                "--set",
                "train.steps=3",
                "--set",
                f"model.compile={compiled}",
                "--set",
                "train.eval_every=100",
                "--set",
                "train.checkpoint_every=100",
            ),
        )
        assert ("blocks compiled by torch.compile" in run.stdout + run.stderr) == (compiled == "true")
        # the exchange's host-side timing is never traced: no guard on a clock value, no recompiling every call
        assert "recompile_limit" not in run.stderr
        losses[compiled] = _history(out)
    assert losses["true"].keys() == losses["false"].keys() == {1, 2, 3}
    for step, loss in losses["false"].items():
        assert losses["true"][step] == pytest.approx(loss, rel=1e-4), step
