"""StartTraining: the final training job with the best tuning trial's hyperparameters.

Input {"run", "best_training_job": {"TrainingJobName", "TunedHyperParameters"}};
output {"job_name", "job_arn", "hyperparameters"}.
train.py's rules are its metrics and its curves go to TensorBoard; SageMaker Debugger's four rules and
ProfilerReport run beside it only when the stack opts in (mlpipeline.training_requests.training_job_request).
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.exceptions import ClientError
from mlpipeline.errors import error_code, translate_aws_errors
from mlpipeline.images import debugger_image_uri
from mlpipeline.run_state import RunState
from mlpipeline.training_requests import training_job_request, tuned_hyperparameters


@translate_aws_errors
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    run = RunState.from_event(event["run"])
    sagemaker = boto3.client("sagemaker")
    request = training_job_request(
        run,
        os.environ["SAGEMAKER_ROLE_ARN"],
        tuned_hyperparameters(event["best_training_job"]),
        # Only an opted-in stack needs the region's rule-evaluator image (some regions have none).
        debugger_image_uri(run.region) if run.settings.enable_sagemaker_debugger else None,
    )
    try:
        answer = sagemaker.create_training_job(**request)
        arn = answer["TrainingJobArn"]
    except ClientError as error:
        # A retried Lambda attempt whose first try did create the job: carry on with that job.
        if error_code(error) != "ResourceInUse":
            raise
        arn = sagemaker.describe_training_job(TrainingJobName=run.training_job_name)["TrainingJobArn"]
    return {
        "job_name": run.training_job_name,
        "job_arn": arn,
        "hyperparameters": {
            k: request["HyperParameters"][k]
            for k in sorted(event["best_training_job"]["TunedHyperParameters"])
            if k in request["HyperParameters"]
        },
    }
