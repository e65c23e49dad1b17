"""The base of ecso's pydantic types: frozen, strict about unknown keys, failing with ``ECSOError``s.

A validation failure raises the class's error type (``ConfigError`` for settings, ``MessageError`` for
messages and requests, ...) with pydantic's ``ValidationError`` as its cause: one ``except ECSOError``
catches everything ecso raises, and the errors stay ``ValueError``s where pydantic users expect one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ECSOError, InputError

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["ECSOModel"]


class ECSOModel(BaseModel):
    """Frozen pydantic model; unknown keys are errors; invalid data raises :attr:`invalid`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    invalid: ClassVar[type[ECSOError]] = InputError
    """The error raised for invalid data (a ``ValueError`` subclass of ``ECSOError``)."""

    def __init__(self, /, **data: Any) -> None:
        # pydantic calls a custom __init__ for nested models and model_validate too (then wrapping
        # what it raises in a ValidationError, which model_validate below unwraps into our error).
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise self.invalid(describe(type(self), exc)) from exc

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        """Pydantic's ``model_validate``, raising :attr:`invalid` instead of ``ValidationError``."""
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise cls.invalid(describe(cls, exc)) from exc

    @classmethod
    def model_validate_json(cls, json_data: Any, *args: Any, **kwargs: Any) -> Self:
        """Pydantic's ``model_validate_json``, raising :attr:`invalid` instead of ``ValidationError``."""
        try:
            return super().model_validate_json(json_data, *args, **kwargs)
        except ValidationError as exc:
            raise cls.invalid(describe(cls, exc)) from exc


def describe(model: type[BaseModel], error: ValidationError) -> str:
    """One line per problem: ``invalid ECSOConfig: bogus: Extra inputs are not permitted``."""
    items = error.errors()
    if len(items) == 1 and not items[0]["loc"] and isinstance(items[0].get("ctx", {}).get("error"), ECSOError):
        return str(items[0]["ctx"]["error"])  # our own error, raised by a nested __init__: already described
    problems = "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or '(value)'}: {item['msg'].removeprefix('Value error, ')}"
        for item in items
    )
    return f"invalid {model.__name__}: {problems}"
