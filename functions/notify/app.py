"""Notify: publishes a run's outcome to the SNS topic.

Input {"outcome", "state"}; output {"message_id", "subject"}."""

from __future__ import annotations

import os
from typing import Any

import boto3
from mlpipeline.errors import translate_aws_errors
from mlpipeline.notifications import compose


@translate_aws_errors
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    subject, body = compose(event["outcome"], event["state"])
    answer = boto3.client("sns").publish(
        TopicArn=os.environ["NOTIFICATION_TOPIC_ARN"], Subject=subject, Message=body
    )
    return {"message_id": answer["MessageId"], "subject": subject}
