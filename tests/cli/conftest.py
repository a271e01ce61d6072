"""Fixtures of the `imgclf aws ...` tests: the pipeline tests' moto world (tests/pipeline/conftest.py:
the real ASL, the real handlers, SageMakerSim), imported rather than copied, plus what the commands read
from a deployed stack (its outputs) and what starts a run on AWS (the EventBridge rule on the manifest)."""

from __future__ import annotations

import importlib.util
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from cli_world import REPO, STACK, pw, stack_outputs, write_dataset

_spec = importlib.util.spec_from_file_location("pipeline_fixtures", REPO / "tests" / "pipeline" / "conftest.py")
assert _spec is not None and _spec.loader is not None
pipeline_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pipeline_fixtures)
aws_env, sim, world = pipeline_fixtures.aws_env, pipeline_fixtures.sim, pipeline_fixtures.world


@pytest.fixture
def stack(world: Any) -> str:
    """A CloudFormation stack named STACK whose outputs name this world's bucket, state machine, URL and
    endpoint (moto creates no SAM resources: a placeholder resource carries the outputs)."""
    template = {"Resources": {"Placeholder": {"Type": "AWS::SNS::Topic"}},
                "Outputs": {key: {"Value": value} for key, value in stack_outputs(world).items()}}
    boto3.client("cloudformation", region_name=pw.REGION).create_stack(StackName=STACK,
                                                                       TemplateBody=json.dumps(template))
    return STACK


@pytest.fixture
def manifest_trigger(world: Any) -> Iterator[list[str]]:
    """The stack's trigger: the bucket sends S3 events to EventBridge (DataBucket's EventBridgeEnabled),
    and the template's DatasetUploaded rule, with its real pattern, targets the state machine. moto
    delivers S3 events to rules but starts no execution from one, so the rule targets a queue and this
    fixture does what a Step Functions target does: StartExecution with the event as its input
    (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-targets.html). Yields the execution ARNs
    it started."""
    pattern = pw.template()["Resources"]["PipelineStateMachine"]["Properties"]["Events"]["DatasetUploaded"][
        "Properties"]["Pattern"]
    pattern = json.loads(json.dumps(pattern).replace('{"Ref": "DataBucket"}', json.dumps(pw.BUCKET)))
    events = boto3.client("events", region_name=pw.REGION)
    world.s3.put_bucket_notification_configuration(Bucket=pw.BUCKET,
                                                   NotificationConfiguration={"EventBridgeConfiguration": {}})
    queue = world.sqs.create_queue(QueueName="dataset-uploaded-target")["QueueUrl"]
    queue_arn = world.sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="DatasetUploaded", EventPattern=json.dumps(pattern))
    events.put_targets(Rule="DatasetUploaded", Targets=[{"Id": "pipeline", "Arn": queue_arn}])
    started: list[str] = []
    stop = threading.Event()

    def deliver() -> None:
        while not stop.is_set():
            for message in world.sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
                # EventBridge names the execution itself (a unique id); moto would leave it "None".
                started.append(world.sfn.start_execution(stateMachineArn=world.state_machine_arn,
                                                         name=str(uuid.uuid4()), input=message["Body"])["executionArn"])
                world.sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            stop.wait(0.05)

    thread = threading.Thread(target=deliver, daemon=True)
    thread.start()
    yield started
    stop.set()
    thread.join(5)


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Callable[..., Path]:
    return lambda name="dogImages", **kwargs: write_dataset(tmp_path / name, **kwargs)


@pytest.fixture
def s3_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Keys in the order S3 (moto's backend) stored them (PutObject; a multipart upload's completion
    stores through the same call)."""
    from moto.s3.models import S3Backend

    order: list[str] = []
    put = S3Backend.put_object

    def recording_put(self: Any, bucket_name: str, key_name: str, *args: Any, **kwargs: Any) -> Any:
        order.append(key_name)
        return put(self, bucket_name, key_name, *args, **kwargs)

    monkeypatch.setattr(S3Backend, "put_object", recording_put)
    return order
