"""The deployed stack, as the commands see it: its outputs (template.yaml's Outputs section)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from imgclf_cli.errors import CliError, ExitCode

# Output keys of template.yaml (tests/cli checks that the template still has each of them).
DATA_BUCKET_OUTPUT = "DataBucketName"
STATE_MACHINE_OUTPUT = "StateMachineArn"
INFERENCE_URL_OUTPUT = "InferenceUrl"
ENDPOINT_NAME_OUTPUT = "EndpointName"
OUTPUT_KEYS = (DATA_BUCKET_OUTPUT, STATE_MACHINE_OUTPUT, INFERENCE_URL_OUTPUT, ENDPOINT_NAME_OUTPUT)


@dataclass(frozen=True)
class StackOutputs:
    name: str
    data_bucket: str
    state_machine_arn: str
    inference_url: str
    endpoint_name: str


def read_stack(cloudformation: Any, name: str) -> StackOutputs:
    """The stack's outputs (cloudformation:DescribeStacks). CliError when the stack or an output is missing."""
    try:
        [stack] = cloudformation.describe_stacks(StackName=name)["Stacks"]
    except ClientError as error:
        if "does not exist" in str(error):
            region = cloudformation.meta.region_name
            raise CliError(f"no stack named {name!r} in {region}: deploy it with `sam deploy` "
                           "or pass --stack/--region", ExitCode.BAD_INPUT) from error
        raise
    outputs = {item["OutputKey"]: item["OutputValue"] for item in stack.get("Outputs", [])}
    missing = [key for key in OUTPUT_KEYS if key not in outputs]
    if missing:
        raise CliError(f"stack {name!r} ({stack.get('StackStatus')}) has no output(s) {', '.join(missing)}: "
                       "is it this project's stack, and finished deploying?", ExitCode.BAD_INPUT)
    return StackOutputs(name=name, data_bucket=outputs[DATA_BUCKET_OUTPUT],
                        state_machine_arn=outputs[STATE_MACHINE_OUTPUT],
                        inference_url=outputs[INFERENCE_URL_OUTPUT], endpoint_name=outputs[ENDPOINT_NAME_OUTPUT])
