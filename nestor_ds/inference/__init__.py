"""Using a trained model: export, one-call loading, prediction on a user's own fields."""

from nestor_ds.inference.model_io import export_model, load_model
from nestor_ds.inference.predictor import Predictor

__all__ = ["Predictor", "export_model", "load_model"]
