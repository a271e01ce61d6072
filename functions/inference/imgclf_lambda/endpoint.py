"""The sagemaker-runtime side of the inference Lambda: client settings, the call, and its errors.

botocore (not boto3) because boto3 would only add its resource layer to the cold start; both ship in the
Lambda runtime. Error mapping and timeout budgeting are pure functions, tested without any network.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import botocore.config
import botocore.session
from botocore import UNSIGNED
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from imgclf_lambda.request import HttpError, ImageRequest, read_endpoint_answer

from imgclf import contract

DEFAULT_FUNCTION_TIMEOUT_SECONDS = 30.0
# One retry: enough to ride over a throttle or a dropped connection, and each attempt keeps a useful read
# timeout inside the function's own timeout.
DEFAULT_MAX_ATTEMPTS = 2
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class InvokeBudget:
    """botocore timeouts and attempts whose worst case still ends before the function times out."""

    connect_timeout: float
    read_timeout: float
    max_attempts: int

    def worst_case_seconds(self) -> float:
        per_attempt = self.connect_timeout + self.read_timeout
        return self.max_attempts * per_attempt + _max_backoff(self.max_attempts)


def _max_backoff(max_attempts: int) -> float:
    # botocore's standard retry mode sleeps rand(0,1) * min(2**i, 20) s before retry i (older botocore, as
    # in the Lambda runtime; newer scales non-throttling retries down): sum the ceilings.
    return float(sum(min(2**i, 20) for i in range(1, max_attempts)))


def invoke_budget(function_timeout_s: float, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> InvokeBudget:
    """Split the function's timeout into connect/read timeouts for `max_attempts` attempts, keeping a
    margin to build and return the answer, so a slow endpoint yields our 504 and not Lambda's timeout."""
    margin = min(1.0, 0.1 * function_timeout_s)
    connect = min(2.0, 0.1 * function_timeout_s)
    read = (function_timeout_s - margin - _max_backoff(max_attempts)) / max_attempts - connect
    if max_attempts < 1 or read < 0.1:
        raise ValueError(
            f"a {function_timeout_s:g} s function timeout leaves no time to read an answer "
            f"in {max_attempts} attempt(s); raise the timeout or lower the attempts"
        )
    return InvokeBudget(connect_timeout=connect, read_timeout=round(read, 3), max_attempts=max_attempts)


@dataclass(frozen=True)
class Settings:
    """What the function reads from its environment, once, at init."""

    endpoint_name: str
    budget: InvokeBudget
    endpoint_url: str | None = None  # SAGEMAKER_RUNTIME_ENDPOINT_URL: e.g. local mode's server
    region: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        endpoint_name = environ.get("ENDPOINT_NAME", "").strip()
        if not endpoint_name:
            raise ValueError("ENDPOINT_NAME is not set: the SageMaker endpoint this function invokes")
        timeout = float(environ.get("FUNCTION_TIMEOUT_SECONDS") or DEFAULT_FUNCTION_TIMEOUT_SECONDS)
        attempts = int(environ.get("INVOKE_MAX_ATTEMPTS") or DEFAULT_MAX_ATTEMPTS)
        endpoint_url = environ.get("SAGEMAKER_RUNTIME_ENDPOINT_URL", "").strip() or None
        region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
        if endpoint_url and not region:
            region = "us-east-1"  # a local endpoint ignores the region, but botocore needs one
        return cls(endpoint_name, invoke_budget(timeout, attempts), endpoint_url, region)


def is_loopback(url: str | None) -> bool:
    return bool(url) and (urlsplit(url).hostname or "") in _LOOPBACK_HOSTS


def client_config(settings: Settings) -> botocore.config.Config:
    options: dict[str, Any] = {
        "connect_timeout": settings.budget.connect_timeout,
        "read_timeout": settings.budget.read_timeout,
        "retries": {"total_max_attempts": settings.budget.max_attempts, "mode": "standard"},
    }
    if is_loopback(settings.endpoint_url):
        # A local endpoint has no IAM; without this, local mode would need AWS credentials to sign.
        options["signature_version"] = UNSIGNED
    return botocore.config.Config(**options)


def make_runtime_client(settings: Settings) -> Any:
    """The sagemaker-runtime client, pointed at SAGEMAKER_RUNTIME_ENDPOINT_URL when that is set."""
    return botocore.session.get_session().create_client(
        "sagemaker-runtime",
        region_name=settings.region,
        endpoint_url=settings.endpoint_url,
        config=client_config(settings),
    )


def invoke(client: Any, endpoint_name: str, request: ImageRequest) -> dict[str, Any]:
    """Send the image to the endpoint and return its checked top-k answer; HttpError on any failure."""
    try:
        response = client.invoke_endpoint(
            EndpointName=endpoint_name,
            Body=request.image,
            ContentType=request.content_type,
            Accept=contract.JSON_CONTENT_TYPE,
            CustomAttributes=contract.top_k_custom_attributes(request.top_k),
        )
        body = response["Body"].read()
    except (ClientError, BotoCoreError) as err:
        raise endpoint_error(err) from err
    answer_type = (response.get("ContentType") or "").split(";", 1)[0].strip().lower()
    if answer_type != contract.JSON_CONTENT_TYPE:
        raise HttpError(502, "model_error", "the model answered with something other than JSON")
    return read_endpoint_answer(body, request.top_k)


# --------------------------------------------------------------------------------------------------
# Errors: what a client can act on. The message never carries the endpoint's own text (it names the
# account and log group); the handler logs that.

_NOT_IN_SERVICE = re.compile(r"not found|not in service|inservice|is (creating|updating|failed)", re.I)
_MODEL_TIMEOUT = re.compile(r"timed out", re.I)
_TOO_LARGE = re.compile(r"too large|payload size|exceeds the maximum", re.I)
_RETRY_LATER = {"Retry-After": "1"}
_RETRY_MUCH_LATER = {"Retry-After": "30"}


def _timeout() -> HttpError:
    return HttpError(504, "endpoint_timeout", "the model did not answer in time; try again")


def endpoint_error(err: Exception) -> HttpError:
    """Map a botocore failure of InvokeEndpoint to the HTTP answer for the client."""
    if isinstance(err, ReadTimeoutError | ConnectTimeoutError):
        return _timeout()
    if isinstance(err, EndpointConnectionError | ConnectionClosedError):
        return HttpError(
            503,
            "endpoint_unavailable",
            "the model endpoint cannot be reached; try again later",
            _RETRY_MUCH_LATER,
        )
    if not isinstance(err, ClientError):
        return HttpError(502, "model_error", "the call to the model failed")
    error = err.response.get("Error", {})
    code = error.get("Code", "")
    message = error.get("Message", "")
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code == "ModelError":
        if _MODEL_TIMEOUT.search(message):
            return _timeout()
        original = err.response.get("OriginalStatusCode")
        if original == 504:  # the container's own request timeout (the local server has one)
            return _timeout()
        if original == 503:
            return HttpError(503, "endpoint_unavailable", "the model is loading; try again shortly", _RETRY_LATER)
        if original in (400, 413, 415):
            # The container could not use what the client sent (say, a truncated JPEG): the client's error.
            return HttpError(
                original,
                "unreadable_image" if original != 413 else "image_too_large",
                "the model could not read this image",
            )
        return HttpError(502, "model_error", "the model failed on this request")
    if code == "ModelNotReadyException":
        return HttpError(503, "endpoint_unavailable", "the model is loading; try again shortly", _RETRY_LATER)
    if code in ("ThrottlingException", "TooManyRequestsException") or status == 429:
        return HttpError(429, "throttled", "too many requests; slow down and retry", _RETRY_LATER)
    if code == "ValidationError" and _NOT_IN_SERVICE.search(message):
        return HttpError(503, "endpoint_unavailable", "the model endpoint is not in service yet", _RETRY_MUCH_LATER)
    if status == 413 or (code == "ValidationError" and _TOO_LARGE.search(message)):
        return HttpError(413, "image_too_large", "the image is larger than the model endpoint accepts")
    if code == "ServiceUnavailable" or status == 503:
        return HttpError(503, "endpoint_unavailable", "the model service is unavailable; try again later", _RETRY_LATER)
    return HttpError(502, "model_error", "the call to the model failed")
