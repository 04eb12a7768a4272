"""The base of every user-facing config (stages, training, scopes, recipes, writer settings).

Frozen, unknown keys refused, and every validation failure is a `ConfigError` with one line naming
the config, the key and the problem, whether the config comes from a TOML file or a Python call:
`PruneConfig(sparsity=2)` raises ConfigError, not pydantic's ValidationError.
"""

from __future__ import annotations

import contextvars
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from edgeshrink.errors import ConfigError


def first_error(exc: ValidationError) -> str:
    """One line: where and what (the first error pydantic found)."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown key {where!r}"
    if err["type"] == "missing":
        return f"missing key {where!r}"
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return f"{where}: {msg}" if where else msg


_WHERE: contextvars.ContextVar[str | None] = contextvars.ContextVar("config_where", default=None)


class Config(BaseModel):
    """Frozen, strict, and failing with a ConfigError (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def _label(cls) -> str:
        field = cls.model_fields.get("type")
        return str(field.default) if field is not None and isinstance(field.default, str) else cls.__name__

    @classmethod
    def _config_error(cls, exc: ValidationError, where: str | None = None) -> ConfigError:
        allowed = ", ".join(k for k in cls.model_fields if k != "type")
        label = f"{where} ({cls._label()})" if where else cls._label()
        return ConfigError(f"{label}: {first_error(exc)} (allowed keys: {allowed})")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise self._config_error(exc, _WHERE.get()) from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise cls._config_error(exc) from None

    @classmethod
    def model_validate_json(cls, json_data: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        try:
            return super().model_validate_json(json_data, *args, **kwargs)
        except ValidationError as exc:
            raise cls._config_error(exc) from None

    @classmethod
    def parse(cls, data: Any, where: str) -> Any:
        """Validate plain data (a TOML table), naming `where` it came from in the error."""
        token = _WHERE.set(where)
        try:
            return super().model_validate(data)
        except ValidationError as exc:
            raise cls._config_error(exc, where) from None
        finally:
            _WHERE.reset(token)
