"""What a pipeline Lambda reads from its environment (template.yaml sets it), parsed once at import, that is
at the function's cold start, into a frozen dataclass: a missing variable fails the start with its name,
not a call half-way through a state.

A handler names its variables in one call, `ENVIRONMENT = function_env.read("endpoint_name", ...)`: a name is
the variable in lower case (`endpoint_name` reads ENDPOINT_NAME), and a keyword gives an optional one its default.
Every variable is a string, so the names are the whole declaration; `read` makes the frozen dataclass for them
(dataclasses.make_dataclass) rather than each handler spelling out a class of `name: str` fields.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, field, fields, is_dataclass, make_dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class MissingEnvironment(RuntimeError):
    """The function's environment lacks a variable its handler needs (the message names it)."""


def from_environ(cls: type[T], environ: Mapping[str, str] | None = None) -> T:
    """An instance of the frozen dataclass `cls` from `environ` (default os.environ)."""
    if not is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass")
    environ = os.environ if environ is None else environ
    declared = fields(cls)
    missing = [f.name.upper() for f in declared
               if f.name.upper() not in environ and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise MissingEnvironment(f"{cls.__name__}: the function's environment lacks {', '.join(missing)}")
    values: dict[str, Any] = {f.name: environ[f.name.upper()] for f in declared if f.name.upper() in environ}
    return cls(**values)


def declare(*required: str, **optional: str) -> type:
    """A frozen dataclass `Environment` of string fields: `required`, then `optional` with their defaults."""
    return make_dataclass(
        "Environment",
        [(name, str) for name in required] + [(name, str, field(default=value)) for name, value in optional.items()],
        frozen=True,
    )


def read(*required: str, **optional: str) -> Any:
    """The handler's environment (os.environ): `required` variables, and `optional` ones with their defaults."""
    return from_environ(declare(*required, **optional))
