"""Notify: publishes a run's outcome to the SNS topic.

Input {"outcome", "state"}; output {"message_id", "subject"}."""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger
from mlpipeline import function_env
from mlpipeline.errors import translate_aws_errors
from mlpipeline.notifications import compose

logger = Logger(service="notify")


# This function's variables in template.yaml (mlpipeline.function_env).
ENVIRONMENT = function_env.read("notification_topic_arn")


@translate_aws_errors
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    logger.append_keys(run_id=(event["state"].get("run") or {}).get("run_id"))  # none when Validate failed
    subject, body = compose(event["outcome"], event["state"])
    answer = boto3.client("sns").publish(
        TopicArn=ENVIRONMENT.notification_topic_arn, Subject=subject, Message=body
    )
    logger.info("notified", extra={"subject": subject, "message_id": answer["MessageId"]})
    return {"message_id": answer["MessageId"], "subject": subject}
