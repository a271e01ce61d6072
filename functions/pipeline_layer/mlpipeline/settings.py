"""A run's settings: the stack's defaults (template parameters, passed in by the state machine's
ApplyDefaults state as strings) overridden by the manifest's `overrides`, coerced and validated.

Every problem is reported at once, with the setting's name, so a bad manifest fails fast and clearly.

`Settings` is the one list of settings: each comes from the template parameter `template_parameter`
names, and statemachine/write_settings.py (`make settings`) writes the ApplyDefaults state's defaults
and the template's DefinitionSubstitutions from it. A new setting is a field here plus its parameter
in template.yaml; tests/pipeline/test_settings_wiring.py fails until the rest is written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from imgclf import contract
from mlpipeline import approval, images, rollout, serverless


@dataclass(frozen=True)
class Settings:
    framework_version: str
    py_version: str
    training_image_uri: str
    inference_image_uri: str
    tuning_instance_type: str
    training_instance_type: str
    training_instance_count: int
    max_jobs: int
    max_parallel_jobs: int
    epochs: int
    backbone: str
    pretrained: str
    patience: int
    precision: str
    lr_min: float
    lr_max: float
    batch_sizes: list[str]
    quality_threshold: float
    endpoint_instance_type: str
    endpoint_instance_count: int
    autoscaling_min_capacity: int
    autoscaling_max_capacity: int
    autoscaling_target_invocations: float
    scale_in_cooldown_seconds: int
    scale_out_cooldown_seconds: int
    use_spot_instances: bool
    max_runtime_seconds: int
    # SageMaker Debugger rules + Profiler on the final training job: off by default (closed to new
    # accounts); the in-script rules, their metrics and TensorBoard work either way (mlpipeline.debugger_config).
    enable_sagemaker_debugger: bool
    # How an update shifts traffic to the new fleet (mlpipeline.rollout: BlueGreenUpdatePolicy).
    rollout_strategy: str
    rollout_step_type: str
    rollout_step_size: int
    rollout_wait_seconds: int
    # Percentage of endpoint requests and answers SageMaker stores in the bucket (DataCaptureConfig);
    # 0 = off, the default (mlpipeline.deployment_requests.data_capture_config).
    data_capture_percentage: int
    # realtime (instances, autoscaling) or serverless (scale to zero; mlpipeline.serverless).
    endpoint_mode: str
    serverless_memory_mb: int
    serverless_max_concurrency: int
    # A frozen backbone (train.py --freeze-backbone, the default) tunes on cached features: one extraction
    # job, then every trial trains the head on this (CPU) instance type (functions/prepare_features).
    freeze_backbone: bool
    cached_features_tuning_instance_type: str
    # auto: the gate approves; manual: a person approves in the model registry (mlpipeline.approval).
    approval_mode: str
    approval_timeout_hours: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# The template parameter of each setting whose name is not the field's name in CamelCase.
PARAMETER_NAMES = {
    "py_version": "PythonVersion",
    "max_jobs": "MaxTuningJobs",
    "max_parallel_jobs": "MaxParallelTuningJobs",
    "lr_min": "LearningRateMin",
    "lr_max": "LearningRateMax",
    "enable_sagemaker_debugger": "EnableSageMakerDebugger",
    "serverless_memory_mb": "ServerlessMemorySizeInMB",
}


def template_parameter(name: str) -> str:
    """The template parameter (and DefinitionSubstitution) that setting `name` comes from."""
    return PARAMETER_NAMES.get(name) or "".join(part.capitalize() for part in name.split("_"))


class SettingsError(ValueError):
    pass


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"expected an integer, got {value!r}")
    return int(float(value)) if isinstance(value, str) and "." in value else int(value)


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    return float(value)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _str(value: Any) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError(f"expected a string, got {value!r}")
    return str(value).strip()


def _batch_sizes(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    sizes = [str(_int(str(item).strip())) for item in items if str(item).strip()]
    if not sizes or any(int(s) < 1 for s in sizes):
        raise ValueError(f"expected positive integers, got {value!r}")
    return sizes


_COERCE: dict[str, Callable[[Any], Any]] = {
    f.name: {"int": _int, "float": _float, "bool": _bool, "str": _str, "list[str]": _batch_sizes}[str(f.type)]
    for f in fields(Settings)
}


def _bound_problems(settings: Settings) -> list[str]:
    """Counts that must be positive, durations that must not be negative."""
    problems = []
    for name in (
        "training_instance_count",
        "max_jobs",
        "max_parallel_jobs",
        "epochs",
        "endpoint_instance_count",
        "autoscaling_min_capacity",
        "max_runtime_seconds",
    ):
        if (value := getattr(settings, name)) < 1:
            problems.append(f"{name} must be >= 1, got {value}")
    for name in ("patience", "scale_in_cooldown_seconds", "scale_out_cooldown_seconds"):
        if (value := getattr(settings, name)) < 0:
            problems.append(f"{name} must be >= 0, got {value}")
    return problems


def _check(settings: Settings) -> list[str]:
    problems = _bound_problems(settings)
    if settings.max_parallel_jobs > settings.max_jobs:
        problems.append("max_parallel_jobs must not exceed max_jobs")
    if not 0 < settings.lr_min < settings.lr_max:
        problems.append(f"need 0 < lr_min < lr_max, got {settings.lr_min} and {settings.lr_max}")
    if settings.backbone not in contract.BACKBONE_NAMES:
        # train.py would refuse it only once the job runs (and bills).
        problems.append(f"backbone must be one of {list(contract.BACKBONE_NAMES)}, got {settings.backbone!r}")
    if not 0.0 <= settings.quality_threshold <= 1.0:
        problems.append(f"quality_threshold is a fraction in [0, 1], got {settings.quality_threshold}")
    if settings.autoscaling_max_capacity < settings.autoscaling_min_capacity:
        problems.append("autoscaling_max_capacity must be >= autoscaling_min_capacity")
    if settings.autoscaling_target_invocations <= 0:
        problems.append("autoscaling_target_invocations must be > 0")
    # DataCaptureConfig.InitialSamplingPercentage: "Valid Range: Minimum value of 0. Maximum value of 100."
    # (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DataCaptureConfig.html)
    if not 0 <= settings.data_capture_percentage <= 100:
        problems.append(f"data_capture_percentage must be in 0..100, got {settings.data_capture_percentage}")
    for name in ("tuning_instance_type", "training_instance_type", "endpoint_instance_type",
                 "cached_features_tuning_instance_type"):
        if not (instance_type := getattr(settings, name)).startswith("ml."):
            problems.append(f"{name} must be a SageMaker instance type like ml.m5.large, got {instance_type!r}")
    if not problems:
        mode_problems = serverless.problems(settings, images.processor_for(settings.endpoint_instance_type))
        problems.extend(mode_problems)
        if not mode_problems:
            problems.extend(rollout.settings_problems(settings))
    problems.extend(approval.settings_problems(settings))
    return problems


def build_settings(defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Settings:
    """Defaults (every field, typically strings from the ASL) + overrides (a subset, from the manifest)."""
    problems: list[str] = []
    missing = sorted(set(_COERCE) - set(defaults))
    if missing:
        problems.append(f"the state machine passed no default for {missing}")
    unknown = sorted(set(overrides or {}) - set(_COERCE))
    if unknown:
        problems.append(f"unknown overrides {unknown}; known settings: {sorted(_COERCE)}")
    values: dict[str, Any] = {}
    for name, coerce in _COERCE.items():
        origin, raw = (
            ("override", overrides[name])
            if overrides and name in overrides
            else ("default", defaults.get(name))
        )
        if raw is None:
            if name not in missing:
                problems.append(f"{origin} {name} is null: give it a value or leave it out")
            continue
        try:
            values[name] = coerce(raw)
        except (TypeError, ValueError) as error:
            problems.append(f"{origin} {name}={raw!r}: {error}")
    if problems:
        raise SettingsError("; ".join(problems))
    settings = Settings(**values)
    problems = _check(settings)
    if problems:
        raise SettingsError("; ".join(problems))
    return settings
