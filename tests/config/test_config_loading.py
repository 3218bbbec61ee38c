"""Shipped configs load; bad configs are refused with a message naming field and reason."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from nestor_ds.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "configs").glob("*.yaml"))


def _tiny() -> dict:
    return yaml.safe_load((REPO / "configs" / "tiny_cpu.yaml").read_text())


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_configs_load(path: Path) -> None:
    cfg = load_config(path)
    assert all(n % cfg.model.patch_size == 0 for n in cfg.model.grid)
    assert cfg.data.datasets


def test_published_tiny_matches_design() -> None:
    m = load_config(REPO / "configs" / "nestor_tiny.yaml").model
    assert (m.grid, m.patch_size, m.tokens, m.width, m.heads, m.blocks) == ([128, 128], 8, 256, 512, 8, 2)
    assert (m.afno_modes, m.mlp_ratio, m.t_in, m.t_out) == (32, 1.0, 10, 1)
    assert (m.moe.experts, m.moe.top_k, m.sub_moe.experts, m.sub_moe.top_k, m.sub_moe.shared_experts) == (6, 2, 6, 2, 1)


def _set(raw: dict, dotted: str, value) -> dict:
    raw = copy.deepcopy(raw)
    node = raw
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    if value is _DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return raw


_DELETE = object()

# (dotted field, bad value, words the message must contain)
BAD = [
    ("model.patch_size", 7, ["model", "grid=[32, 32]", "multiple of patch_size=7"]),
    ("model.moe.top_k", 5, ["model.moe", "top_k=5", "larger than experts=4"]),
    ("model.sub_moe.top_k", 9, ["model.sub_moe", "top_k=9", "larger than experts=4"]),
    ("parallel.ep_size", 3, ["ep_size=3", "does not divide", "experts=4"]),
    ("parallel.zero_stage", 3, ["zero_stage=3", "not supported with MoE"]),
    ("model.t_in", 60, ["ns2d_fno_1e-3", "window t_in+t_out=61", "50-frame"]),
    ("train.t_ar", 47, ["ns2d_fno_1e-3", "window t_in+t_ar=51", "50-frame"]),  # the unroll's frames
    ("data.noise_norm", "std", ["data.noise_norm", "channel_rms", "set_std"]),
    ("data.datasets", [{"name": "ns3d_unknown"}], ["datasets[0]", "unknown data set 'ns3d_unknown'"]),
    ("model.variant", "transformer", ["model.variant", "nestor", "dpot", "moepot"]),
    ("model.widht", 64, ["model.widht", "Extra inputs are not permitted"]),
    ("train.micro_batch_per_rank", 0, ["train.micro_batch_per_rank", "greater than 0"]),
    ("train.epochs", 3, ["give exactly one of steps or epochs"]),
    ("model.heads", 5, ["width=64", "not divisible by heads=5"]),
    ("model.moe.capacity_factor", -1.0, ["model.moe.capacity_factor", "greater than 0"]),
    ("data.datasets", [{"name": "swe_pdb"}, {"name": "swe_pdb"}], ["datasets[1]", "listed twice"]),
    ("model.channels", 1, ["dr_pdb", "2 channels", "model.channels=1"]),
    ("parallel.precision", "fp8", ["parallel.precision", "fp32", "bf16"]),
    ("data", _DELETE, ["data", "Field required"]),
]


def test_unroll_length_must_be_whole_steps() -> None:
    raw = _set(_set(_tiny(), "model.t_out", 2), "train.t_ar", 3)
    with pytest.raises(ConfigError, match="train.t_ar=3 is not a multiple of model.t_out=2"):
        parse_config(raw, "tiny_cpu.yaml")


@pytest.mark.parametrize(
    "field,value,words", BAD, ids=[f"{b[0]}={'<deleted>' if b[1] is _DELETE else repr(b[1])}"[:60] for b in BAD]
)
def test_bad_config_rejected_with_reason(field: str, value, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_set(_tiny(), field, value), "tiny_cpu.yaml")
    msg = str(info.value)
    assert "tiny_cpu.yaml" in msg
    for word in words:
        assert word in msg, f"{word!r} missing from: {msg}"


def test_yaml_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_config(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml is not valid YAML"):
        load_config(broken)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml must be a mapping"):
        load_config(listy)


def test_overrides_apply_dotted_paths() -> None:
    cfg = load_config(REPO / "configs" / "tiny_cpu.yaml", {"train.steps": 7, "model.moe.top_k": 1})
    assert cfg.train.steps == 7 and cfg.model.moe.top_k == 1


def test_custom_dataset_entry_is_accepted() -> None:
    raw = _set(
        _tiny(),
        "data.custom",
        {
            "my_flow": {
                "format": "shards",
                "resolution": 32,
                "channels": 2,
                "frames": 12,
                "train": 4,
                "test": 2,
                "weight": 1,
            }
        },
    )
    raw["data"]["datasets"].append({"name": "my_flow"})
    cfg = parse_config(raw)
    assert cfg.data.info("my_flow").frames == 12


def test_checkpoint_dir_defaults_under_output_dir() -> None:
    cfg = parse_config(_tiny())
    assert cfg.checkpoint_dir == Path("runs/tiny_cpu/checkpoints")


def test_a_length_on_the_command_line_replaces_the_files_unit(tmp_path) -> None:
    from nestor_ds.config import load_config

    path = tmp_path / "run.yaml"
    path.write_text("data: {datasets: [{name: swe_pdb}]}\ntrain: {epochs: 500}\n")
    assert load_config(path, {"train.steps": 20}).train.steps == 20
    assert load_config(path, {"train.steps": 20}).train.epochs is None
    assert load_config(path).train.epochs == 500


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf"])
def test_non_finite_numbers_are_refused(value: str) -> None:
    import yaml

    from nestor_ds.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="train.optimizer.lr"):
        load_config(
            Path(__file__).resolve().parents[2] / "configs" / "tiny_cpu.yaml",
            {"train.optimizer.lr": yaml.safe_load(value)},
        )


def test_grid_by_axis_and_data_of_the_other_dimensionality_named() -> None:
    cfg = load_config(REPO / "configs" / "tiny_cpu.yaml")  # resolution: 32, shorthand for [32, 32]
    assert cfg.model.grid == [32, 32] and cfg.model.dims == 2 and "resolution" not in cfg.model.model_dump()
    three = load_config(REPO / "configs" / "quickstart_3d.yaml")
    assert three.model.dims == 3 and three.model.tokens == 64
    # a 3-D set for a 2-D model, and the reverse: both named
    with pytest.raises(ConfigError, match=r"'ns3d_pdb_M1_rand' is 3-D \(grid \[128, 128, 128\]\) but the model is 2-D"):
        load_config(REPO / "configs" / "tiny_cpu.yaml", {"data.datasets": [{"name": "ns3d_pdb_M1_rand"}]})
    with pytest.raises(ConfigError, match=r"'ns2d_fno_1e-3' is 2-D \(grid \[64, 64\]\) but the model is 3-D"):
        load_config(REPO / "configs" / "quickstart_3d.yaml", {"data.datasets": [{"name": "ns2d_fno_1e-3"}]})
    # --set model.grid replaces a file's resolution (and the reverse); both in one place is refused
    assert load_config(REPO / "configs" / "tiny_cpu.yaml", {"model.grid": [16, 32]}).model.grid == [16, 32]
    raw = yaml.safe_load((REPO / "configs" / "tiny_cpu.yaml").read_text())
    raw["model"]["grid"] = [32, 32]
    with pytest.raises(ConfigError, match="give model.grid or the resolution shorthand"):
        parse_config(raw)
    with pytest.raises(ConfigError, match="train.init_2d_to_3d is for 3-D models"):
        load_config(REPO / "configs" / "tiny_cpu.yaml", {"train.init_2d_to_3d": "blocks"})
