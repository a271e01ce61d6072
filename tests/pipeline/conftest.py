"""Fixtures of the pipeline tests: a moto world with the real handlers and the real ASL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import stack

if TYPE_CHECKING:
    import pipeline_world as pw

# moto and the world load only with a fixture that needs them, so the pure pipeline tests stay in the
# unit tier (pyproject's unit_tier; tests/conftest.py keeps it free of moto and torch).


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and the pipeline functions' environment (template.yaml)."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": stack.REGION,
        "AWS_REGION": stack.REGION,
    }.items():
        monkeypatch.setenv(name, value)
    for name, value in stack.lambda_environment().items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> pw.SageMakerSim:
    import pipeline_world as pw

    simulation = pw.SageMakerSim()
    simulation.install(monkeypatch)
    return simulation


@pytest.fixture
def world(aws_env: None, sim: pw.SageMakerSim, monkeypatch: pytest.MonkeyPatch) -> Iterator[pw.PipelineWorld]:
    import pipeline_world as pw
    from moto import mock_aws

    invocations: list[tuple[str, dict[str, Any]]] = []
    pw.install_inprocess_lambdas(monkeypatch, invocations)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        world = pw.PipelineWorld(sim, invocations)
        monkeypatch.setenv("NOTIFICATION_TOPIC_ARN", world.topic_arn)
        yield world


@pytest.fixture(autouse=True)
def iam_as_aws_evaluates_it(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every scenario that runs the world: each AWS call its handlers made, and each function the state
    machine invoked, must be authorized by template.yaml's policies as AWS evaluates them
    (tests/pipeline/iam_model.py). Per scenario, so a denial names the scenario that needs the call.

    Only a PipelineWorld records into AWS_CALL_LOG; a test module with a world of its own (test_teardown.py)
    overrides `world` and evaluates that world's calls itself, with the same evaluator."""
    if "world" not in request.fixturenames:
        yield
        return
    import iam_model
    import pipeline_world as pw

    start = len(pw.AWS_CALL_LOG)
    world = request.getfixturevalue("world")
    if not isinstance(world, pw.PipelineWorld):
        yield
        return
    yield
    invoked = [function for function, _payload in world.invocations]
    iam_model.assert_scenario_authorized(pw.AWS_CALL_LOG[start:], invoked)
