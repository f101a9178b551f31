"""Check a plain config mapping against a dataclass schema and build the typed object.

Unlike a first-error-wins merge, this collects every problem (unknown keys with a suggestion,
wrong types, missing required values) so the user sees them all at once.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin

from framework.core.errors import did_you_mean

MISSING_MARK = "???"  # OmegaConf's spelling of "required, not set"

OriginFn = Callable[[str], str]
# (dotted path of an unknown key, the key, the fields allowed beside it) -> the problem line
UnknownKeyFn = Callable[[str, str, list[str]], str]
# `Optional[X]` and `X | None` are the same type with two origins (typing.Union, types.UnionType).
UNION_ORIGINS = (Union, types.UnionType)


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in UNION_ORIGINS:
        return " or ".join(_describe(a) for a in get_args(tp))
    if origin in (list, list):
        return f"list of {_describe(get_args(tp)[0])}" if get_args(tp) else "list"
    if origin in (dict, dict):
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


class _Checker:
    def __init__(self, origin: OriginFn, unknown: UnknownKeyFn | None = None):
        self.origin = origin
        self.unknown = unknown or self.unknown_key
        self.problems: list[str] = []

    def unknown_key(self, where: str, key: str, fields: list[str]) -> str:
        """The default line for a key the schema does not have."""
        return (
            f"{where}: unknown key{did_you_mean(key, fields)} (set in {self.origin(where)}); "
            f"valid keys: {', '.join(sorted(fields))}"
        )

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def value(self, tp: Any, value: Any, path: str) -> Any:
        origin = get_origin(tp)
        if tp is Any:
            return value
        if origin in UNION_ORIGINS:
            args = get_args(tp)
            if value is None:
                if type(None) in args:
                    return None
                self.fail(path, f"must be {_describe(tp)}, got null")
                return None
            for arg in args:
                if arg is type(None):
                    continue
                trial = _Checker(self.origin, self.unknown)
                result = trial.value(arg, value, path)
                if not trial.problems:
                    return result
            self.fail(path, f"must be {_describe(tp)}, got {value!r}")
            return None
        if origin is Literal:
            choices = get_args(tp)
            if value not in choices:
                self.fail(
                    path,
                    f"must be one of {', '.join(map(repr, choices))}, got {value!r}"
                    f"{did_you_mean(value, choices)}",
                )
            return value
        if origin in (list, list):
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                self.fail(path, f"must be {_describe(tp)}, got {value!r}")
                return []
            (item_tp,) = get_args(tp) or (Any,)
            return [self.value(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
        if origin in (dict, dict):
            if not isinstance(value, dict):
                self.fail(path, f"must be a mapping, got {value!r}")
                return {}
            _, item_tp = get_args(tp) or (str, Any)
            return {str(k): self.value(item_tp, v, f"{path}.{k}") for k, v in value.items()}
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                self.fail(path, f"must be a mapping of {tp.__name__} fields, got {value!r}")
                return None
            return self.dataclass(tp, value, path)
        if value is None:
            self.fail(path, f"must be {_describe(tp)}, got null")
            return None
        if tp is bool:
            if not isinstance(value, bool):
                self.fail(path, f"must be true or false, got {value!r}")
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                self.fail(path, f"must be an integer, got {value!r}")
            return value
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.fail(path, f"must be a number, got {value!r}")
                return value
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                self.fail(path, f"must be a string, got {value!r}")
            return value
        return value

    def dataclass(self, cls: type, node: dict[str, Any], path: str) -> Any:
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        for key in node:
            if key not in fields:
                where = f"{path}.{key}" if path else str(key)
                self.problems.append(self.unknown(where, str(key), sorted(fields)))
        kwargs = {}
        for name, field in fields.items():
            where = f"{path}.{name}" if path else name
            required = (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            )
            if name not in node or node[name] == MISSING_MARK:
                if required or node.get(name) == MISSING_MARK:
                    self.fail(
                        where,
                        f"missing value: set it in the recipe or on the command line ({where}=...)",
                    )
                continue
            kwargs[name] = self.value(hints[name], node[name], where)
        if self.problems:
            return None
        return cls(**kwargs)


def check_dataclass(
    cls: type,
    node: dict[str, Any],
    path: str,
    origin: OriginFn,
    problems: list[str],
    unknown: UnknownKeyFn | None = None,
) -> Any | None:
    """Build ``cls`` from ``node``; append every problem found to ``problems`` (None if any).
    ``unknown`` words the line for a key the schema lacks (default: where it was set, the closest
    field and the valid ones)."""
    checker = _Checker(origin, unknown)
    result = checker.dataclass(cls, node, path)
    problems.extend(checker.problems)
    return None if checker.problems else result
