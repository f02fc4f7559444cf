"""Configuration: TOML tables turned into frozen, validated dataclasses.

`from_mapping(cls, mapping, where)` builds dataclass `cls` from a TOML table: an unknown key, a
missing required key or a value of the wrong type raises ValueError naming the key (with its
dotted path `where.key`), the value and what is allowed. Range checks live in each class's
`__post_init__` and use `check_range`, so every message has the same shape.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
import types
import typing
from pathlib import Path

import numpy as np


def check_range(key, value, low=-math.inf, high=math.inf, low_open=False, high_open=False):
    """Return float(value); ValueError naming `key` unless it is finite and inside the range."""
    number = check_number(key, value)
    below = number <= low if low_open else number < low
    above = number >= high if high_open else number > high
    if below or above:
        left, right = ("(" if low_open else "["), (")" if high_open else "]")
        shown = value if isinstance(value, (int, float)) else number
        raise ValueError(f"{key} = {shown!r} is outside the allowed range {left}{low!r}, {high!r}{right}")
    return number


def check_number(key, value):
    """Return float(value); ValueError naming `key` unless it is a finite real number."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{key} = {value!r} must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{key} = {value!r} must be a finite number")
    return number


def check_integer(key, value, low=0, high=2**63 - 1):
    """Return int(value); ValueError naming `key` unless it is an integer (not a bool) in [low, high]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{key} = {value!r} must be an integer in [{low}, {high}]")
    if not low <= int(value) <= high:
        raise ValueError(f"{key} = {value!r} is outside the allowed range [{low}, {high}]")
    return int(value)


def check_edges(key, value):
    """Return value as a float64 array of bin edges; ValueError naming `key` unless it holds at
    least two finite, strictly increasing numbers."""
    edges = np.ascontiguousarray(value, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise ValueError(f"{key} = {value!r} must be at least two finite, increasing edges")
    return edges


def check_choice(key, value, choices):
    if value not in choices:
        raise ValueError(f"{key} = {value!r} is not allowed; choose one of {list(choices)}")
    return value


def _matches(value, annotation) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (tuple, list):
        return isinstance(value, (list, tuple))
    if dataclasses.is_dataclass(annotation) or origin is dict:
        return isinstance(value, dict)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def from_mapping(cls, mapping, where: str):
    """Build dataclass `cls` from a TOML table, checking keys and types (see the module doc)."""
    if not isinstance(mapping, dict):
        raise ValueError(f"{where} must be a table, got {mapping!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ValueError(f"unknown key {where}.{unknown[0]} = {mapping[unknown[0]]!r}; allowed keys: {sorted(fields)}")
    values = {}
    for name, field in fields.items():
        if name not in mapping:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ValueError(f"missing required key {where}.{name}")
            continue
        value, annotation = mapping[name], hints[name]
        if not _matches(value, annotation):
            raise ValueError(f"{where}.{name} = {value!r} has the wrong type; expected {_type_name(annotation)}")
        values[name] = _convert(value, annotation)
    try:
        return cls(**values)
    except ValueError as error:
        message = str(error)
        raise ValueError(message if message.startswith(where) else f"{where}.{message}") from None


def _convert(value, annotation):
    if annotation is float or (typing.get_origin(annotation) in (typing.Union, types.UnionType) and float in typing.get_args(annotation)):
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if typing.get_origin(annotation) is tuple:
        return tuple(value)
    return value


def _type_name(annotation) -> str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return "nothing"
    return getattr(annotation, "__name__", str(annotation))


def load_toml(path) -> dict:
    """Read a TOML file; ValueError naming the file for a missing or malformed one."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise ValueError(f"config = {str(path)!r} cannot be read: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"config = {str(path)!r} is not valid TOML: {error}") from None


def to_plain(value):
    """A dataclass tree as plain JSON-able Python (for saving with outputs and hashing)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value) if not f.name.startswith("_")}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


def content_hash(value) -> str:
    """SHA-256 of the canonical JSON of a configuration (first 16 hex digits)."""
    text = json.dumps(to_plain(value), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _path_parts(path: str) -> list[str]:
    if not isinstance(path, str) or not path or any(not part for part in path.split(".")):
        raise ValueError(f"key = {path!r} must be a dotted path such as 'simulation.ms_scale'")
    return path.split(".")


def path_values(data, path: str) -> list:
    """The values at a dotted `path` of a nested table ("*" matches every element of an array or
    every key of a table, an integer indexes an array); ValueError naming the first missing part."""
    nodes = [(data, "")]
    for part in _path_parts(path):
        following = []
        for node, where in nodes:
            here = f"{where}.{part}" if where else part
            if part == "*" and isinstance(node, (list, dict)):
                items = node.items() if isinstance(node, dict) else enumerate(node)
                following.extend((value, f"{where}.{key}") for key, value in items)
            elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
                following.append((node[int(part)], here))
            elif isinstance(node, dict) and part in node:
                following.append((node[part], here))
            else:
                raise ValueError(f"key = {path!r}: {here!r} does not exist in the configuration")
        nodes = following
    return [node for node, _ in nodes]


def with_path_value(data, path: str, change, create: bool = False):
    """A deep copy of nested table `data` where each value v at dotted `path` becomes change(v).

    With create=True missing keys of tables along the path are added (tables on the way empty,
    the last one as change(None)): for optional keys that a table may leave at their default;
    the configuration class then says whether the key is allowed.
    """
    import copy

    data = copy.deepcopy(data)
    parts = _path_parts(path)

    def visit(node, index, where):
        part = parts[index]
        last = index == len(parts) - 1
        if isinstance(node, list):
            if part == "*":
                keys = range(len(node))
            elif part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
                keys = [int(part)]
            else:
                raise ValueError(f"key = {path!r}: {where}.{part} does not exist (an array of {len(node)})")
        elif isinstance(node, dict):
            if part == "*":
                keys = list(node)
            elif part in node:
                keys = [part]
            elif create:
                node[part] = None if last else {}
                keys = [part]
            else:
                raise ValueError(f"key = {path!r}: {(where + '.' if where else '') + part!r} does not exist in the configuration")
        else:
            raise ValueError(f"key = {path!r}: {where!r} is {node!r}, not a table")
        for key in keys:
            here = f"{where}.{key}" if where else str(key)
            if last:
                node[key] = change(node[key])
            else:
                visit(node[key], index + 1, here)

    visit(data, 0, "")
    return data
