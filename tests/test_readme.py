"""The README's commands are the ones CI and the quick start run, and its config reference is current."""

from __future__ import annotations

import re
from pathlib import Path

from nestor_ds.config.reference import config_reference, readme_section

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def _two_commands() -> list[str]:
    block = README.split("## The two commands", 1)[1]
    code = re.search(r"```bash\n(.*?)```", block, re.S).group(1)
    return [line for line in code.splitlines() if line.strip()]


def test_readme_has_exactly_two_commands_and_ci_runs_the_second() -> None:
    first, second = _two_commands()
    assert first == "bash scripts/quickstart.sh"
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert second in ci, f"{second!r} not in .ci/run"


def test_quickstart_uses_the_same_bootstrap_and_launcher() -> None:
    script = (REPO / "scripts" / "quickstart.sh").read_text()
    assert "bash scripts/bootstrap.sh" in script and _two_commands()[1].startswith("bash scripts/bootstrap.sh")
    assert ".venv/bin/deepspeed --num_gpus" in script and "launch/train.py" in script
    for path in re.findall(r"configs/\w+\.yaml", script):
        assert (REPO / path).is_file(), path


def test_config_reference_is_generated_from_the_schema() -> None:
    assert readme_section(README) == config_reference(), "README config reference is stale: regenerate it"


def test_every_config_key_is_documented() -> None:
    table = config_reference()
    for key in ("model.moe.capacity_factor", "data.on_bad_sample", "train.freeze", "parallel.ep_size", "tracking.uri"):
        assert f"`{key}`" in table
    assert "|  |" not in table  # every field has a description
