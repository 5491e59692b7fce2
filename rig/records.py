"""Typed values across the disk: a dataclass written as JSON (`to_json`) is read back into the same type
(`from_json`), nested dataclasses, tuples, enums and paths included. A key the type lacks (a file of a newer
rig) is ignored and a key the file lacks (an older rig) takes the field's default, so old run directories still
open; a value of the wrong kind is a RigError naming the file's key."""
from __future__ import annotations

import dataclasses
import enum
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from rig.errors import RigError

T = TypeVar("T")


def to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value) if not f.name.startswith("_")}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


def from_json(cls: type[T], data: Any, where: str = "") -> T:
    """`data` (parsed JSON) as a `cls`."""
    return _convert(cls, data, where or cls.__name__)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where) if len(inner) == 1 else value
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RigError(f"{where}: expected a mapping, found {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        kwargs = {f.name: _convert(hints[f.name], value[f.name], f"{where}.{f.name}")
                  for f in dataclasses.fields(tp) if f.init and f.name in value}
        return tp(**kwargs)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise RigError(f"{where}: expected a list, found {type(value).__name__}")
        inner = typing.get_args(tp)[0] if typing.get_args(tp) else Any
        items = [_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise RigError(f"{where}: expected a mapping, found {type(value).__name__}")
        args = typing.get_args(tp)
        return {k: _convert(args[1], v, f"{where}.{k}") for k, v in value.items()} if args else dict(value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise RigError(f"{where}: {value!r} is not one of {', '.join(str(m.value) for m in tp)}") from None
    if tp is Path:
        return Path(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (str, int, float, bool) and not isinstance(value, tp):
        raise RigError(f"{where}: expected {tp.__name__}, found {value!r}")
    return value
