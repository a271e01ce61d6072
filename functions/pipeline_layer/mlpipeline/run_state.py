"""The run state: what ValidateFunction decides once for a run (runs.plan_run) and every later state reads.

The state machine carries it as JSON in `$.run` (ValidateFunction's ResultPath) and hands it to the tasks as
`run`; a handler parses it with `RunState.from_event(event["run"])`, and the pure modules take the RunState.
`to_dict()` is the same JSON again, key for key, so the ASL's shape does not change. A missing or ill-typed
key fails at the boundary, with its path (`run.settings.epochs: ...`), instead of as a KeyError later.

A redeploy by hand (mlpipeline.redeploy) is a run too, with `redeploy` naming the model package it deploys;
it has no dataset, training source or jobs of its own, so those fields are empty strings (and `splits` {}).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from mlpipeline.settings import Settings


class RunStateError(ValueError):
    """A `run` that is not a RunState: a key missing, unknown or of the wrong type (the message names it)."""


@dataclass(frozen=True)
class RunState:
    run_id: str
    dataset: str
    version_token: str
    region: str
    bucket: str
    manifest_key: str
    dataset_s3_uri: str
    # split name (train/valid/test) -> its folder under the dataset prefix
    splits: dict[str, str]
    source_s3_uri: str
    output_s3_uri: str
    checkpoint_s3_uri: str
    debugger_s3_uri: str
    profiler_s3_uri: str
    tuning_job_name: str
    training_job_name: str
    model_name: str
    endpoint_config_name: str
    training_image_uri: str
    tuning_image_uri: str
    cached_tuning_image_uri: str
    inference_image_uri: str
    settings: Settings
    # WaitForApproval's TimeoutSecondsPath (ApprovalMode=manual; the ASL wants whole seconds).
    approval_timeout_seconds: int
    # A redeploy by hand: {"model_package_arn", "model_package_version", "trained_by_run", "model_data_url"}.
    redeploy: dict[str, Any] | None = None

    @classmethod
    def from_event(cls, value: Any, where: str = "run") -> RunState:
        """The RunState of `value` (the `run` JSON a task receives); RunStateError names what is wrong."""
        values = _fields_of(value, {f.name for f in fields(cls)}, where, optional={"redeploy"})
        problems = []
        for name, raw in values.items():
            if name == "settings":
                continue
            if name == "approval_timeout_seconds":
                if isinstance(raw, bool) or not isinstance(raw, int):
                    problems.append(f"{where}.{name}: expected an integer, got {raw!r}")
                continue
            if name == "redeploy":
                if raw is not None and not isinstance(raw, Mapping):
                    problems.append(f"{where}.redeploy: expected an object, got {raw!r}")
                continue
            if name == "splits":
                if not isinstance(raw, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
                ):
                    problems.append(f"{where}.splits: expected an object of strings, got {raw!r}")
            elif not isinstance(raw, str):
                problems.append(f"{where}.{name}: expected a string, got {raw!r}")
        if problems:
            raise RunStateError("; ".join(problems))
        redeploy = values.get("redeploy")
        return cls(**{**values, "splits": dict(values["splits"]),
                      "redeploy": dict(redeploy) if redeploy is not None else None,
                      "settings": settings_from_dict(values["settings"], f"{where}.settings")})

    def to_dict(self) -> dict[str, Any]:
        """The JSON the state machine carries (runs.plan_run's shape; the settings as Settings.as_dict); a run
        that is no redeploy carries no `redeploy` key."""
        out = asdict(self)
        if out["redeploy"] is None:
            del out["redeploy"]
        return out


def _fields_of(value: Any, names: set[str], where: str, optional: frozenset[str] | set[str] = frozenset()
               ) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise RunStateError(f"{where}: expected an object, got {type(value).__name__}")
    missing, unknown = sorted(names - set(value) - set(optional)), sorted(set(value) - names)
    if missing or unknown:
        raise RunStateError("; ".join(
            [f"{where}: missing key {name!r}" for name in missing]
            + [f"{where}: unknown key {name!r}" for name in unknown]))
    return dict(value)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an integer")
    return value


def _float(value: Any) -> float:
    # JSON may carry 70.0 as 70: an integer is a number too (a boolean is not).
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("expected a number")
    return float(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected true or false")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TypeError("expected a list of strings")
    return list(value)


# The settings in a run are already coerced and validated (settings.build_settings): here they are only
# checked to be of their field's type, never converted from text.
_CHECK: dict[str, Callable[[Any], Any]] = {
    f.name: {"int": _int, "float": _float, "bool": _bool, "str": _str, "list[str]": _strings}[str(f.type)]
    for f in fields(Settings)
}


def settings_from_dict(value: Any, where: str = "settings") -> Settings:
    """The Settings of a run's `settings` object (Settings.as_dict's JSON); RunStateError names what is wrong."""
    values = _fields_of(value, set(_CHECK), where)
    checked, problems = {}, []
    for name, check in _CHECK.items():
        try:
            checked[name] = check(values[name])
        except TypeError as error:
            problems.append(f"{where}.{name}: {error}, got {values[name]!r}")
    if problems:
        raise RunStateError("; ".join(problems))
    return Settings(**checked)
