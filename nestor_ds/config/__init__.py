"""Run configuration: schema, YAML loading and the derived DeepSpeed config."""

from nestor_ds.config.deepspeed_config import build_deepspeed_config, read_ds_json
from nestor_ds.config.loading import ConfigError, load_config, parse_config
from nestor_ds.config.schema import (
    AblationConfig,
    DataConfig,
    DatasetEntry,
    ImageMoEConfig,
    ModelConfig,
    ParallelConfig,
    RunConfig,
    SubMoEConfig,
    TrackingConfig,
    TrainConfig,
)

__all__ = [
    "AblationConfig",
    "ConfigError",
    "DataConfig",
    "DatasetEntry",
    "ImageMoEConfig",
    "ModelConfig",
    "ParallelConfig",
    "RunConfig",
    "SubMoEConfig",
    "TrackingConfig",
    "TrainConfig",
    "build_deepspeed_config",
    "load_config",
    "parse_config",
    "read_ds_json",
]
