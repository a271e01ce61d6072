"""DescribeJob: the progress of the tuning job, the training job or the endpoint deployment, and when to
look again (mlpipeline.polling).

Input {"kind": "tuning" | "training" | "extraction" | "endpoint", "name", "expected_config" (endpoint only),
       "poll": {"attempt", "wait_seconds"} (the previous answer's), "poll_seconds", "settings", "run_id"}.
Output {"done": bool, "status", ..., "poll": {"attempt", "wait_seconds"}}; raises SageMakerJobFailed /
EndpointDeploymentFailed, or PollLimitExceeded after the phase's last poll.

A status check that AWS throttles or fails transiently is a poll that learnt nothing: it answers "not
done" and the loop looks again after its back-off. The ASL retries only Lambda's own errors here, which
keeps each poll's worst-case history small (tests/pipeline/test_history_budget.py).
"""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError, ConnectionError, ReadTimeoutError
from mlpipeline import job_progress, polling
from mlpipeline.errors import THROTTLING_CODES, TRANSIENT_CODES, error_code, translate_aws_errors
from mlpipeline.run_state import settings_from_dict

logger = Logger(service="describe-job")


KINDS = ("tuning", "training", "extraction", "endpoint")


def _progress(sagemaker: Any, event: dict[str, Any]) -> dict[str, Any]:
    kind, name = event["kind"], event["name"]
    if kind == "tuning":
        return job_progress.tuning_progress(
            sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        )
    if kind in ("training", "extraction"):  # the feature extraction is a training job too
        return job_progress.training_progress(sagemaker.describe_training_job(TrainingJobName=name))
    return job_progress.endpoint_progress(sagemaker.describe_endpoint(EndpointName=name), event["expected_config"])


@translate_aws_errors
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    kind, name = event["kind"], event["name"]
    # The ASL hands this state the job's name and the run's settings, not the run: the job names it.
    logger.append_keys(run_id=event.get("run_id"), kind=kind, job_name=name)
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: expected one of {KINDS}")
    try:
        progress = _progress(boto3.client("sagemaker"), event)
    except ClientError as error:
        if error_code(error) not in THROTTLING_CODES | TRANSIENT_CODES:
            raise
        progress = job_progress.unknown_progress(error_code(error))
    except (ConnectionError, ReadTimeoutError) as error:
        progress = job_progress.unknown_progress(type(error).__name__)
    poll = polling.next_poll(
        kind, name, progress, event["poll"], settings_from_dict(event["settings"]), int(event["poll_seconds"])
    )
    logger.info("status", extra={"done": progress["done"], "status": progress["status"]})
    return {**progress, "poll": poll}
