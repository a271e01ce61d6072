"""StartTraining: the final training job with the best tuning trial's hyperparameters.

Input {"run", "best_training_job": {"TrainingJobName", "TunedHyperParameters"}};
output {"job_name", "job_arn", "hyperparameters"}.
train.py's rules are its metrics and its curves go to TensorBoard; SageMaker Debugger's four rules and
ProfilerReport run beside it only when the stack opts in (mlpipeline.training_requests.training_job_request).
"""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError
from mlpipeline import function_env
from mlpipeline.errors import error_code, translate_aws_errors
from mlpipeline.images import debugger_image_uri
from mlpipeline.run_state import RunState
from mlpipeline.training_requests import training_job_request, tuned_hyperparameters

logger = Logger(service="start-training")


# This function's variables in template.yaml (mlpipeline.function_env).
ENVIRONMENT = function_env.read("sagemaker_role_arn")


@translate_aws_errors
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    run = RunState.from_event(event["run"])
    logger.append_keys(run_id=run.run_id)
    sagemaker = boto3.client("sagemaker")
    request = training_job_request(
        run,
        ENVIRONMENT.sagemaker_role_arn,
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
    logger.info("training job", extra={"job_name": run.training_job_name})
    return {
        "job_name": run.training_job_name,
        "job_arn": arn,
        "hyperparameters": {
            k: request["HyperParameters"][k]
            for k in sorted(event["best_training_job"]["TunedHyperParameters"])
            if k in request["HyperParameters"]
        },
    }
