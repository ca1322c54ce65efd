"""Dagster config fields mirrored from :class:`iot_fed.config.Settings`.

One source for every knob: a resource or run-config class built here has one optional
field per chosen setting, with the setting's constraints and description. ``None`` (the
default) means "take it from the settings" (``IOT_FED_<NAME>``, ``.env``, YAML), so the
launchpad shows every knob and a run can override any of them, while nothing is read at
import. Dagster config knows no ``Literal``: choices become string enums (a dropdown in
the UI; an unknown value is rejected before the run starts, naming the field).
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, create_model

from iot_fed.config import ENV_PREFIX, Settings


def _config_type(name: str, annotation: Any) -> Any:
    """The Dagster-config-friendly type of a Settings annotation (without ``None``)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _config_type(name, typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _config_type(name, args[0])
    if origin is Literal:
        choices = typing.get_args(annotation)
        title = "".join(p.title() for p in name.split("_"))
        return enum.Enum(title, {str(c): str(c) for c in choices}, type=str)
    if origin is tuple:
        return list[typing.get_args(annotation)[0]]
    if annotation is Path:
        return str
    return annotation


def is_secret(name: str) -> bool:
    return _config_type(name, Settings.model_fields[name].annotation) is SecretStr


def _default_text(name: str) -> str:
    info = Settings.model_fields[name]
    if info.default_factory is not None:
        return "computed"
    return repr(info.default)


def settings_fields(names: Iterable[str]) -> dict[str, Any]:
    """``create_model`` field definitions: one optional field per setting in ``names``."""
    out: dict[str, Any] = {}
    for name in names:
        info = Settings.model_fields[name]
        kind = _config_type(name, info.annotation)
        if kind is SecretStr:
            raise ValueError(f"{name} is a secret: pass it as dg.EnvVar, not as a config field")
        about = f"{info.description or name} [default: {ENV_PREFIX}{name.upper()}"
        about += f" or {_default_text(name)}]"
        if info.metadata:  # the setting's constraints (ge, gt, ...) on the value itself
            kind = typing.Annotated[kind, *info.metadata]
        out[name] = (kind | None, Field(None, description=about))
    return out


def public_settings() -> list[str]:
    """Every setting that is not a secret (secrets stay ``dg.EnvVar`` on their resource)."""
    return [n for n in Settings.model_fields if not is_secret(n)]


def config_class(
    name: str, base: type[BaseModel], names: Iterable[str], doc: str, module: str
) -> Any:
    """A ``dg.Config`` / ``dg.ConfigurableResource`` subclass with :func:`settings_fields`."""
    cls = create_model(name, __base__=base, __module__=module, **settings_fields(names))
    cls.__doc__ = doc
    return cls


def overrides(model: BaseModel, names: Iterable[str] | None = None) -> dict[str, Any]:
    """The fields of ``model`` that were set (not None), as ``load_settings`` keywords."""
    chosen = names if names is not None else type(model).model_fields
    out: dict[str, Any] = {}
    for name in chosen:
        value = getattr(model, name)
        if value is None:
            continue
        out[name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value
