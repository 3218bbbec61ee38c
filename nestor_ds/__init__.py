"""NESTOR-DS: nested Mixture-of-Experts neural operators trained with DeepSpeed expert parallelism."""

__version__ = "0.1.0"
