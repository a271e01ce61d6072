"""mlpipeline.function_env: a handler's environment, read once at import, fails at start with the name of what
is missing (not half-way through a state)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import FrozenInstanceError, dataclass

import pipeline_world as pw
import pytest
from mlpipeline import function_env


@dataclass(frozen=True)
class _Example:
    endpoint_name: str
    sagemaker_role_arn: str
    price_list_api: str = "true"


def test_fields_read_their_variables_and_defaults_are_optional() -> None:
    env = function_env.from_environ(_Example, {"ENDPOINT_NAME": "e", "SAGEMAKER_ROLE_ARN": "r", "OTHER": "x"})
    assert env == _Example("e", "r", "true")
    with pytest.raises(FrozenInstanceError):
        env.endpoint_name = "other"  # type: ignore[misc]


def test_every_missing_variable_is_named() -> None:
    with pytest.raises(function_env.MissingEnvironment, match=r"_Example: .* lacks ENDPOINT_NAME, SAGEMAKER_ROLE_ARN$"):
        function_env.from_environ(_Example, {"PRICE_LIST_API": "false"})


@pytest.mark.parametrize("folder", ["deploy", "validate", "notify"])
def test_a_handler_without_its_environment_fails_at_import(folder: str) -> None:
    """As at a cold start: importing the handler is what fails, naming the variable."""
    code = (f"import importlib.util, sys; spec = importlib.util.spec_from_file_location('h', "
            f"r'{pw.REPO / 'functions' / folder / 'app.py'}'); "
            "module = sys.modules['h'] = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)")
    env = {"PYTHONPATH": f"{pw.LAYER}:{pw.REPO / 'training'}", "PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": pw.REGION}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    assert "MissingEnvironment" in result.stderr and "lacks" in result.stderr, result.stderr[-2000:]
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env={**env, **pw.lambda_environment(topic_arn=pw.TOPIC_ARN)})
    assert imported.returncode == 0, imported.stderr[-2000:]
