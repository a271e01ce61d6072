"""Errors the state machine knows by name (a Lambda error's name is its exception class name).

- ThrottlingError, TransientAwsError: retried with backoff by every Task (see the ASL's Retry).
- DuplicateRun: this dataset version already ran; caught into the DuplicateIgnored state.
- PollLimitExceeded: a job or the endpoint outlived its poll budget (mlpipeline.polling); like every
  other error it goes to Cleanup, which stops what still runs.
- RedeployRefused: a hand-started redeploy names no approved package of this stack (mlpipeline.redeploy).
- everything else: caught into Cleanup -> NotifyFailure -> Fail.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from botocore.exceptions import ClientError, ConnectionError, ReadTimeoutError

# Error codes AWS documents as throttling or transient for SageMaker, S3, Auto Scaling and SNS.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "SlowDown",
        "RequestThrottledException",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalServiceError",
        "InternalServiceException",
        "RequestTimeout",
        "RequestTimeoutException",
        "ConcurrentUpdateException",
    }
)


class PipelineError(Exception):
    """Base of the errors the pipeline raises on purpose."""


class ThrottlingError(PipelineError):
    """AWS throttled a call: retried by the state machine with exponential backoff."""


class TransientAwsError(PipelineError):
    """AWS failed in a way worth retrying (5xx, timeouts)."""


class DuplicateRun(PipelineError):
    """This dataset version already started a run (duplicate event, re-uploaded manifest)."""


class InvalidDataset(PipelineError):
    """The manifest or the dataset's layout is unusable; the message says what to fix."""


class SageMakerJobFailed(PipelineError):
    """A tuning or training job failed or was stopped (message: SageMaker's FailureReason)."""


class EndpointDeploymentFailed(PipelineError):
    """The endpoint failed to create/update, or a blue/green update rolled back."""


class SmokeTestFailed(PipelineError):
    """The deployed endpoint did not answer the smoke sample as the model recorded it (message: the
    evidence and what was done to the live endpoint)."""


class FeaturesMissing(PipelineError):
    """The extraction job completed, yet its feature set's manifest is not in the data bucket."""


class PollLimitExceeded(PipelineError):
    """A job or the endpoint was still not done after the last status check its phase may use."""


class RedeployRefused(PipelineError):
    """A redeploy input that names no approved version of this stack's model package group (malformed,
    another group, not Approved, not deployable here): refused before anything is created."""


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


F = TypeVar("F", bound=Callable[..., Any])


def translate_aws_errors(handler: F) -> F:
    """Re-raise throttling/transient AWS errors under the names the ASL retries; others pass."""

    @wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except ClientError as error:
            code = error_code(error)
            if code in THROTTLING_CODES:
                raise ThrottlingError(f"{code}: {error}") from error
            if code in TRANSIENT_CODES:
                raise TransientAwsError(f"{code}: {error}") from error
            raise
        except (ConnectionError, ReadTimeoutError) as error:
            raise TransientAwsError(str(error)) from error

    return wrapper  # type: ignore[return-value]
