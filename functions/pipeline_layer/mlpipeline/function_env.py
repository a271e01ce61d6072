"""What a pipeline Lambda reads from its environment (template.yaml sets it), parsed once at import, that is
at the function's cold start, into a frozen dataclass: a missing variable fails the start with its name,
not a call half-way through a state.

Each handler declares its own dataclass; a field is the variable in lower case (`endpoint_name` reads
ENDPOINT_NAME), and a field with a default is optional.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, fields, is_dataclass
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
