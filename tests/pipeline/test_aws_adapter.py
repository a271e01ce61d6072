"""mlpipeline.aws: "not found" as each service answers it, describe-or-none, create-once, the plans' actions.

The error shapes are the ones AWS documents (SageMaker's common errors,
https://docs.aws.amazon.com/sagemaker/latest/APIReference/CommonErrors.html; S3 HeadObject's bare 404,
https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html) with the messages SageMaker returns for
a missing endpoint, model, config and training job.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore import xform_name
from botocore.exceptions import ClientError
from mlpipeline import aws


def client_error(code: str, message: str = "", operation: str = "Describe") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


@pytest.mark.parametrize(
    "error",
    [
        client_error("ValidationException", 'Could not find endpoint "imgclf".'),
        client_error("ValidationException", 'Could not find model "m".'),
        client_error("ValidationException", 'Could not find endpoint configuration "c".'),
        client_error("ValidationException", "Requested resource not found."),  # DescribeTrainingJob
        client_error("ResourceNotFound", "Amazon SageMaker can't find a tuning job with name x"),
        client_error("404", "Not Found", "HeadObject"),
        client_error("NoSuchKey", "The specified key does not exist.", "GetObject"),
        client_error("NoSuchVersion", "The specified version does not exist.", "GetObject"),
        client_error("ExecutionDoesNotExist", "Execution Does Not Exist", "StopExecution"),
        client_error("ObjectNotFoundException", "No scalable target", "DeregisterScalableTarget"),
    ],
)
def test_not_found_as_each_service_says_it(error: ClientError) -> None:
    assert aws.is_not_found(error)


@pytest.mark.parametrize(
    "error",
    [
        # A ValidationException that is not about a missing resource is a real error (a bad request).
        client_error("ValidationException", "1 validation error detected: Value 'x' at 'instanceType'"),
        client_error("ValidationException", "Cannot update in-progress endpoint"),
        client_error("AccessDeniedException", "not authorized to perform: sagemaker:DescribeEndpoint"),
        client_error("ThrottlingException", "Rate exceeded"),
    ],
)
def test_other_errors_are_not_not_found(error: ClientError) -> None:
    assert not aws.is_not_found(error)


def raising(error: ClientError) -> Any:
    def call(**request: Any) -> Any:
        raise error

    return call


def test_describe_or_none() -> None:
    assert aws.describe_or_none(lambda **request: {"seen": request}, Name="x") == {"seen": {"Name": "x"}}
    assert aws.describe_or_none(raising(client_error("ValidationException", "Could not find model"))) is None
    denied = client_error("AccessDeniedException", "not authorized")
    with pytest.raises(ClientError):
        aws.describe_or_none(raising(denied))


def test_create_once() -> None:
    made: list[dict[str, Any]] = []
    assert aws.create_once(lambda **request: made.append(request), ModelName="m") is True
    assert made == [{"ModelName": "m"}]
    exists = client_error("ValidationException", 'Cannot create already existing model "arn:…:model/m".')
    assert aws.create_once(raising(exists)) is False
    assert aws.create_once(raising(client_error("ResourceInUse", "Job name already exists"))) is False
    with pytest.raises(ClientError):
        aws.create_once(raising(client_error("ValidationException", "Could not find model data")))


class RecordingSageMaker:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, method: str) -> Any:
        return lambda **request: self.calls.append((method, request))


def test_every_plan_action_is_a_real_sagemaker_operation() -> None:
    """Each action maps to a SageMaker operation and its name parameter, as botocore's model has them."""
    model = boto3.client("sagemaker", region_name="us-east-1").meta.service_model
    operations = {model.operation_model(name).name: model.operation_model(name) for name in model.operation_names}
    by_method = {xform_name(name): op for name, op in operations.items()}
    for kind, (method, parameter) in aws.SAGEMAKER_ACTIONS.items():
        shape = by_method[method].input_shape
        assert parameter in shape.required_members, (kind, method, parameter)
    sagemaker = RecordingSageMaker()
    assert aws.sagemaker_action(sagemaker, "delete_model", "m")
    assert not aws.sagemaker_action(sagemaker, "register_autoscaling", "e")
    assert sagemaker.calls == [("delete_model", {"ModelName": "m"})]
