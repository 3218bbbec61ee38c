"""NESTOR-DS: nested Mixture-of-Experts neural operators trained with DeepSpeed expert parallelism."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:  # lazy: ``import nestor_ds`` stays light (no torch) for the CLI
    if name in ("load_model", "Predictor", "export_model"):
        import nestor_ds.inference as inference

        return getattr(inference, name)
    raise AttributeError(f"module 'nestor_ds' has no attribute {name!r}")


__all__ = ["Predictor", "__version__", "export_model", "load_model"]
