"""Call the inference Lambda's own handler (functions/inference/app.py) against the local endpoint.

No second copy of the handler: the module is imported as the package `functions.inference.app`, with the
environment the stack gives it (ENDPOINT_NAME) plus SAGEMAKER_RUNTIME_ENDPOINT_URL pointing its
sagemaker-runtime client at the local server, and it receives the same Function URL event AWS would send.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from imgclf import contract

HANDLER_MODULE = "functions.inference.app"


@dataclass
class LambdaContext:
    """The attributes of the Lambda runtime's context object that handlers and Powertools read."""

    function_name: str = "local-inference"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:local-inference"
    aws_request_id: str = ""
    log_group_name: str = "/aws/lambda/local-inference"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def load_handler(endpoint_name: str, endpoint_url: str) -> ModuleType:
    """Import the inference handler afresh, as a new Lambda execution environment would (it reads its
    environment and builds its client at import), pointed at `endpoint_url`."""
    os.environ["ENDPOINT_NAME"] = endpoint_name
    os.environ["SAGEMAKER_RUNTIME_ENDPOINT_URL"] = endpoint_url
    # boto3 signs requests even for a local endpoint: give it a region and throwaway credentials when
    # the machine has none (local mode needs no AWS account).
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    if "AWS_ACCESS_KEY_ID" not in os.environ and "AWS_PROFILE" not in os.environ:
        os.environ["AWS_ACCESS_KEY_ID"] = "local"
        os.environ["AWS_SECRET_ACCESS_KEY"] = "local"
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "inference")
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "ImageClassifierLocal")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    sys.modules.pop(HANDLER_MODULE, None)
    return importlib.import_module(HANDLER_MODULE)


def function_url_event(image: bytes, content_type: str, top_k: int = contract.DEFAULT_TOP_K) -> dict[str, Any]:
    """A Lambda Function URL (payload 2.0) POST with a binary body, as AWS delivers it: base64-encoded."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "rawQueryString": f"top_k={top_k}",
        "queryStringParameters": {"top_k": str(top_k)},
        "headers": {"content-type": content_type, "accept": contract.JSON_CONTENT_TYPE},
        "requestContext": {
            "http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                     "userAgent": "localmode"},
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
        },
        "body": base64.b64encode(image).decode("ascii"),
        "isBase64Encoded": True,
    }


def invoke(handler_module: ModuleType, image_path: Path, top_k: int = 3) -> tuple[int, Any]:
    """(status code, parsed JSON body) of one Function URL request for the image at `image_path`."""
    data = image_path.read_bytes()
    content_type = contract.sniff_image_type(data) or "application/octet-stream"
    event = function_url_event(data, content_type, top_k)
    response = handler_module.handler(event, LambdaContext(aws_request_id=str(uuid.uuid4())))
    body = response.get("body", "")
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode("utf-8")
    return int(response["statusCode"]), json.loads(body) if body else None
