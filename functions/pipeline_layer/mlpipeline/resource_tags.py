"""The tags the pipeline puts on the SageMaker resources it creates: the run's (run id, dataset) on every
one, and on the jobs a retried state may find again, the Step Functions execution that started them."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from mlpipeline.run_state import RunState

# The tag on the tuning job naming the Step Functions execution that created it: a retried StartTuning
# tells its own job (carry on) from another execution's (DuplicateRun) by it.
EXECUTION_TAG_KEY = "imgclf:execution"


def tag_value(text: str) -> str:
    """SageMaker tag values allow letters, digits, spaces and _.:/=+-@ (a dataset folder may hold more)."""
    return re.sub(r"[^\w.:/=+\-@ ]", "_", text, flags=re.ASCII)[:256]


def run_tags(run: RunState) -> list[dict[str, str]]:
    return [
        {"Key": "imgclf:run-id", "Value": run.run_id},
        {"Key": "imgclf:dataset", "Value": tag_value(run.dataset)},
    ]


def execution_tag(execution_arn: str) -> dict[str, str]:
    """The tag naming the execution that starts the tuning job. An ARN within the tag value's pattern and
    length (letters, digits, _.:/=+-@ and spaces, at most 256) is the value itself; any other (an execution
    name may hold characters such as ! or ( ) is its sha256, so that two executions never share a value."""
    if len(execution_arn) <= 256 and re.fullmatch(r"[\w.:/=+\-@ ]*", execution_arn, flags=re.ASCII):
        value = execution_arn
    else:
        value = "sha256:" + hashlib.sha256(execution_arn.encode()).hexdigest()
    return {"Key": EXECUTION_TAG_KEY, "Value": value}


def started_by(tags: list[Mapping[str, str]], execution_arn: str) -> bool:
    """Whether a resource's tags (ListTags) say that this execution created it."""
    return execution_tag(execution_arn) in [{"Key": t["Key"], "Value": t["Value"]} for t in tags]
