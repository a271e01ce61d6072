"""Report: the run's report and cost, built at the end of every run (succeeded, rejected or failed).

Input {"outcome", "state", "execution_arn"}; output {"report_s3_uri", "report_url", "cost_line", ...},
which the notification carries. A Lambda (not a SageMaker Processing job): the report is seconds of
matplotlib, it must render when SageMaker itself failed the run, and it needs no instance start-up or quota.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# matplotlib writes its cache under $HOME, read-only on Lambda: /tmp instead (before the import below).
os.environ.setdefault("MPLCONFIGDIR", "/tmp/matplotlib")

import boto3
from aws_lambda_powertools import Logger
from botocore.config import Config
from mlpipeline import costs, function_env, run_report
from mlpipeline.errors import translate_aws_errors

logger = Logger(service="report")


# This function's variables in template.yaml (mlpipeline.function_env).
ENVIRONMENT = function_env.read("endpoint_name", price_list_api="true", aws_region="us-east-1")


def _clients(region: str) -> dict[str, Any]:
    clients: dict[str, Any] = {name: boto3.client(name) for name in ("sagemaker", "stepfunctions", "lambda")}
    # SigV4 and the regional endpoint: a presigned link must name the bucket's region to be valid there.
    clients["s3"] = boto3.client("s3", region_name=region, config=Config(signature_version="s3v4"))
    if ENVIRONMENT.price_list_api.lower() == "true":
        clients["pricing"] = boto3.client("pricing", region_name=costs.PRICE_LIST_API_REGION)
    return clients


@translate_aws_errors
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    state = event["state"]
    run = state["run"]
    logger.append_keys(run_id=run.get("run_id"))
    clients = _clients(run.get("region") or ENVIRONMENT.aws_region)
    with run_report.temporary_workdir() as workdir:
        built = run_report.build(outcome=event["outcome"], state=state, execution_arn=event.get("execution_arn"),
                                 clients=clients, endpoint_name=ENVIRONMENT.endpoint_name, workdir=Path(workdir))
    return run_report.publish(clients["s3"], run, built)
