"""The configuration reference, generated from the pydantic models so the docs cannot drift."""

from __future__ import annotations

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from nestor_ds.config.schema import RunConfig

BEGIN, END = "<!-- config-reference:begin -->", "<!-- config-reference:end -->"


def _type_name(annotation: object) -> str:
    text = str(annotation).replace("typing.", "").replace("pathlib.", "").replace("<class '", "").replace("'>", "")
    return text.replace("nestor_ds.config.datasets.", "").replace("|", "or")


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += _rows(annotation, f"{key}.")
            continue
        if field.default_factory is not None:
            default = repr(field.default_factory())  # type: ignore[call-arg]  # no-argument factories only
        elif field.default is PydanticUndefined:
            default = "required"
        else:
            default = repr(field.default)
        desc = (field.description or "").replace("|", "/")
        rows.append(f"| `{key}` | `{_type_name(annotation)}` | `{default}` | {desc} |")
    return rows


def config_reference() -> str:
    """Markdown table of every config key: type, default and meaning (the README's reference)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    return "\n".join(lines + _rows(RunConfig, ""))


def readme_section(readme: str) -> str:
    """The generated block as it stands in the README (between the markers)."""
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[start:end].strip()


__all__ = ["BEGIN", "END", "config_reference", "readme_section"]
