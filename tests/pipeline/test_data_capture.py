"""Endpoint data capture (issue 11 item 3): the DataCapturePercentage stack parameter (0 = off, the default)
puts a DataCaptureConfig in Deploy's CreateEndpointConfig; SageMaker then writes the sampled requests and
answers under data-capture/ as the model's execution role, which conftest.py's IAM evaluation checks for
every scenario here (iam_model.py `_data_capture_writes`).

AWS's shapes: https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DataCaptureConfig.html (the
config), API_DataCaptureConfigSummary.html (what DescribeEndpoint shows), and the S3 layout in
https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-data-capture-endpoint.html."""

from __future__ import annotations

import copy
import json
from typing import Any

import iam_model
import pipeline_world as pw
import pytest
from mlpipeline import deployment_requests
from mlpipeline.settings import SettingsError, build_settings
from test_requests import asl_defaults, assert_valid, make_run

from imgclf import contract


def test_capture_is_off_by_default_everywhere() -> None:
    """The stack parameter defaults to 0, the ASL passes it to the run's settings, and the config then has no
    DataCaptureConfig at all (an absent config, not a disabled one, is what 'off' means to SageMaker)."""
    parameter = pw.template()["Parameters"]["DataCapturePercentage"]
    assert (parameter["Default"], parameter["MinValue"], parameter["MaxValue"]) == (0, 0, 100)
    assert asl_defaults()["data_capture_percentage"] == "0"
    run = make_run()
    assert run.settings.data_capture_percentage == 0
    assert deployment_requests.data_capture_config(run) is None
    assert "DataCaptureConfig" not in deployment_requests.endpoint_config_request(run, 0.9)


def test_a_sampling_percentage_captures_requests_and_answers_under_the_data_bucket() -> None:
    run = make_run(data_capture_percentage=25)
    request = deployment_requests.endpoint_config_request(run, 0.9)
    assert_valid("sagemaker", "CreateEndpointConfig", request)  # botocore's shape and the service's patterns
    capture = request["DataCaptureConfig"]
    assert capture == {
        "EnableCapture": True,
        "InitialSamplingPercentage": 25,
        "DestinationS3Uri": f"s3://{pw.BUCKET}/data-capture/",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"JsonContentTypes": [contract.JSON_CONTENT_TYPE]},
    }
    # Types listed there are recorded as JSON text; the images must not be, so that SageMaker base64-encodes
    # them (its default for every other type).
    listed = {t for types in capture["CaptureContentTypeHeader"].values() for t in types}
    assert not listed & set(contract.IMAGE_CONTENT_TYPES)


@pytest.mark.parametrize("percentage", [-1, 101])
def test_a_percentage_outside_0_to_100_is_refused_at_validate(percentage: int) -> None:
    with pytest.raises(SettingsError, match=r"data_capture_percentage must be in 0\.\.100"):
        build_settings(asl_defaults(), {"data_capture_percentage": percentage})


def test_the_stack_parameter_reaches_apply_defaults() -> None:
    """The template hands the parameter to the state machine, whose ApplyDefaults passes it to Validate."""
    substitutions = pw.template()["Resources"]["PipelineStateMachine"]["Properties"]["DefinitionSubstitutions"]
    assert substitutions["DataCapturePercentage"] == {"Ref": "DataCapturePercentage"}
    asl = json.loads(pw.ASL_PATH.read_text())
    assert asl["States"]["ApplyDefaults"]["Parameters"]["defaults"]["data_capture_percentage"] == (
        "${DataCapturePercentage}"
    )


def _capture_of(world: pw.PipelineWorld, run: dict[str, Any]) -> tuple[Any, Any]:
    config = world.sagemaker.describe_endpoint_config(EndpointConfigName=run["endpoint_config_name"])
    endpoint = world.sagemaker.describe_endpoint(EndpointName=pw.ENDPOINT)
    return config.get("DataCaptureConfig"), endpoint.get("DataCaptureConfig")


def test_a_run_with_capture_on_deploys_an_endpoint_that_captures(world: pw.PipelineWorld) -> None:
    manifest = {"version": "v1", "overrides": {"data_capture_percentage": 20}}
    execution = world.run(pw.upload_dataset(world.s3, manifest=manifest), "capture-on")
    assert execution["status"] == "SUCCEEDED", execution
    run = json.loads(execution["output"])["run"]
    config, summary = _capture_of(world, run)
    assert config["InitialSamplingPercentage"] == 20 and config["DestinationS3Uri"] == f"s3://{pw.BUCKET}/data-capture/"
    assert summary == {"EnableCapture": True, "CaptureStatus": "Started", "CurrentSamplingPercentage": 20,
                       "DestinationS3Uri": f"s3://{pw.BUCKET}/data-capture/", "KmsKeyId": ""}


def test_a_default_run_deploys_an_endpoint_without_capture(world: pw.PipelineWorld) -> None:
    execution = world.run(pw.upload_dataset(world.s3), "capture-off")
    assert execution["status"] == "SUCCEEDED", execution
    assert _capture_of(world, json.loads(execution["output"])["run"]) == (None, None)


def test_an_update_turns_capture_on_with_the_new_config(world: pw.PipelineWorld) -> None:
    """The capture is the endpoint config's: it starts when the blue/green update to a capturing config
    completes (DescribeEndpoint shows the config the endpoint runs)."""
    assert world.run(pw.upload_dataset(world.s3, manifest={"version": "v1"}), "v1")["status"] == "SUCCEEDED"
    assert world.sagemaker.describe_endpoint(EndpointName=pw.ENDPOINT).get("DataCaptureConfig") is None
    manifest = {"version": "v2", "overrides": {"data_capture_percentage": 5}}
    second = world.run(pw.upload_dataset(world.s3, manifest=manifest), "v2")
    assert second["status"] == "SUCCEEDED", second
    assert json.loads(second["output"])["deployment"]["action"] == "update"
    summary = world.sagemaker.describe_endpoint(EndpointName=pw.ENDPOINT)["DataCaptureConfig"]
    assert summary["CurrentSamplingPercentage"] == 5 and summary["CaptureStatus"] == "Started"


def _without_capture_grant() -> iam_model.WorldTemplate:
    """The world's template with the SageMaker execution role's WriteDataCapture statement taken out."""
    transformed = copy.deepcopy(iam_model._transformed(pw.TEMPLATE_PATH.read_text(), pw.ASL_PATH.read_text()))
    for policy in transformed["Resources"]["SageMakerExecutionRole"]["Properties"]["Policies"]:
        statements = policy["PolicyDocument"]["Statement"]
        statements[:] = [s for s in statements if s.get("Sid") != "WriteDataCapture"]
    return iam_model.WorldTemplate(transformed)


def test_the_capture_write_is_evaluated_and_needs_the_template_grant() -> None:
    """The derivation yields the capture write as the execution role, and the template's policy is what
    allows it: without the WriteDataCapture statement, IAM denies it."""
    template = iam_model.world_template()
    config = deployment_requests.endpoint_config_request(make_run(data_capture_percentage=10), 0.9)
    model = {"ModelName": config["ProductionVariants"][0]["ModelName"],
             "ExecutionRoleArn": template.role_arn("SageMakerExecutionRole")}
    calls = [
        iam_model.Call("DeployFunction", "sagemaker", "CreateModel", model),
        iam_model.Call("DeployFunction", "sagemaker", "CreateEndpointConfig", config),
        iam_model.Call("DeployFunction", "sagemaker", "CreateEndpoint",
                       {"EndpointName": pw.ENDPOINT, "EndpointConfigName": config["EndpointConfigName"]}),
    ]
    requests = iam_model.Deriver(template, calls).requests()
    writes = [r for r in requests if r.action == "s3:PutObject" and "/data-capture/" in r.resource]
    assert [(w.principal, w.resource) for w in writes] == [(
        "SageMakerExecutionRole",
        f"arn:aws:s3:::{pw.BUCKET}/data-capture/{pw.ENDPOINT}/AllTraffic/2026/01/01/00/example-capture.jsonl",
    )]
    assert [v.result for v in iam_model.evaluate(template, writes)] == ["Allowed"]
    assert [v.result for v in iam_model.evaluate(_without_capture_grant(), writes)] == ["ImplicitlyDenied"]
