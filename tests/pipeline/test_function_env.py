"""mlpipeline.function_env: a handler's environment, read once at import, fails at start with the name of what
is missing (not half-way through a state)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import MISSING, FrozenInstanceError, dataclass, fields

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


def test_read_declares_the_names_as_string_fields_and_keywords_as_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENDPOINT_NAME", "e")
    monkeypatch.delenv("PRICE_LIST_API", raising=False)
    env = function_env.read("endpoint_name", price_list_api="true")
    assert (env.endpoint_name, env.price_list_api) == ("e", "true")
    assert [(f.name, f.type, f.default) for f in fields(env)] == [
        ("endpoint_name", str, MISSING), ("price_list_api", str, "true")]
    with pytest.raises(FrozenInstanceError):
        env.endpoint_name = "other"  # type: ignore[misc]
    monkeypatch.delenv("ENDPOINT_NAME")
    with pytest.raises(function_env.MissingEnvironment, match=r"lacks ENDPOINT_NAME$"):
        function_env.read("endpoint_name", price_list_api="true")


def test_every_missing_variable_is_named() -> None:
    with pytest.raises(function_env.MissingEnvironment, match=r"_Example: .* lacks ENDPOINT_NAME, SAGEMAKER_ROLE_ARN$"):
        function_env.from_environ(_Example, {"PRICE_LIST_API": "false"})


@pytest.mark.parametrize("folder", ["deploy", "validate", "notify"])
def test_a_handler_without_its_environment_fails_at_import(folder: str) -> None:
    """As at a cold start: importing the handler is what fails, naming the variable."""
    code = f"import functions.{folder}.app"
    env = {"PYTHONPATH": f"{pw.LAYER}:{pw.REPO / 'training'}", "PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": pw.REGION}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    assert "MissingEnvironment" in result.stderr and "lacks" in result.stderr, result.stderr[-2000:]
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env={**env, **pw.lambda_environment(topic_arn=pw.TOPIC_ARN)})
    assert imported.returncode == 0, imported.stderr[-2000:]


# Set by the Lambda runtime itself, not by the template ("Defined runtime environment variables",
# https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime).
LAMBDA_RUNTIME_VARIABLES = {"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_LAMBDA_FUNCTION_NAME"}


@pytest.mark.parametrize(("logical_id", "folder"), sorted(pw.FUNCTIONS.items()))
def test_every_variable_a_handler_needs_is_one_template_yaml_sets(logical_id: str, folder: str) -> None:
    """A handler's required Environment fields are variables its function has in template.yaml (Globals merged
    as SAM merges them), so a deployed function starts; an optional one (a default) is the runtime's or a
    local override; and no handler reads os.environ behind its Environment's back."""
    properties = pw.function_properties(pw.template(), logical_id)
    in_template = set((properties.get("Environment") or {}).get("Variables") or {})
    handler = pw.load_handler(folder)
    declared = fields(handler.ENVIRONMENT) if hasattr(handler, "ENVIRONMENT") else ()
    required = {f.name.upper() for f in declared if f.default is MISSING}
    assert required <= in_template, f"{folder} needs {sorted(required - in_template)}, which template.yaml never sets"
    source = (pw.REPO / "functions" / folder / "app.py").read_text()
    for read in ("os.environ[", "os.environ.get(", "os.getenv("):
        assert read not in source, f"{folder} reads the environment directly ({read}) instead of its Environment"
    # TRAINING_SOURCE_DIR: where Validate finds the training source off Lambda (default: the layer's copy).
    assert {f.name.upper() for f in declared} - in_template <= LAMBDA_RUNTIME_VARIABLES | {"TRAINING_SOURCE_DIR"}
