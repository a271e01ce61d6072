"""EndpointMode=serverless: SageMaker Serverless Inference (scale to zero) instead of real-time instances,
and the combinations AWS refuses for it, checked at Validate before any money is spent.

AWS's rules:
- ProductionVariantServerlessConfig
  (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProductionVariantServerlessConfig.html):
  MemorySizeInMB one of 1024, 2048, 3072, 4096, 5120, 6144; MaxConcurrency 1..200. A serverless variant
  names no instance type or count.
- No GPUs: serverless endpoints run on CPU (the feature exclusions of
  https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints.html), so the inference image must
  be the CPU one; the pipeline picks the image by EndpointInstanceType (mlpipeline.images), which must then
  be a CPU type.
- No data capture: the same feature exclusions list "data capture" (and Model Monitor, multiple production
  variants) among what Serverless Inference does not support, so DataCapturePercentage must stay 0.
- Payloads of at most 4 MB each way, /invocations answered within 1 minute, and the model downloaded and
  /ping answered within 3 minutes of a cold start
  (https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints-invoke.html).
- No autoscaling policy: the service scales the concurrency itself (ConfigureAutoscaling registers none).
- Updates: the same blue/green UpdateEndpoint as real-time; deployment guardrails exclude serverless
  endpoints only from rolling deployments
  (https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-exclusions.html). A canary or
  linear step, though, is sized as a share of "the variant's total instance count"
  (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_TrafficRoutingConfig.html), which a
  serverless variant does not have: we refuse CANARY and LINEAR in this mode rather than guess.
- A real-time endpoint cannot be updated to a serverless one ("Updating a real-time inference endpoint to
  an on-demand serverless endpoint ... is currently not supported",
  https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints-update.html): Deploy refuses a
  mode change of the live endpoint (mode_change_problem) instead of deleting what serves traffic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # settings imports this module: only its type here
    from mlpipeline.settings import Settings

MODES = ("realtime", "serverless")
SERVERLESS = "serverless"
MEMORY_SIZES_MB = (1024, 2048, 3072, 4096, 5120, 6144)
MAX_CONCURRENCY_RANGE = (1, 200)


def is_serverless(settings: Settings) -> bool:
    return settings.endpoint_mode == SERVERLESS


def problems(settings: Settings, processor: str) -> list[str]:
    """What AWS refuses about the endpoint mode settings; `processor` is the inference image's (cpu/gpu)."""
    mode = settings.endpoint_mode
    if mode not in MODES:
        return [f"endpoint_mode must be one of {list(MODES)}, got {mode!r}"]
    if mode != SERVERLESS:
        return []
    found = []
    if settings.serverless_memory_mb not in MEMORY_SIZES_MB:
        found.append(f"serverless_memory_mb (MemorySizeInMB) must be one of {list(MEMORY_SIZES_MB)}, "
                     f"got {settings.serverless_memory_mb}")
    low, high = MAX_CONCURRENCY_RANGE
    if not low <= settings.serverless_max_concurrency <= high:
        found.append(f"serverless_max_concurrency (MaxConcurrency) must be in {low}..{high}, "
                     f"got {settings.serverless_max_concurrency}")
    if settings.rollout_strategy != "ALL_AT_ONCE":
        found.append(f"rollout_strategy {settings.rollout_strategy} sizes its steps by instance count, which a "
                     "serverless endpoint does not have: use ALL_AT_ONCE with endpoint_mode=serverless")
    if settings.data_capture_percentage:
        found.append(f"serverless endpoints do not support data capture: data_capture_percentage must be 0 with "
                     f"endpoint_mode=serverless, got {settings.data_capture_percentage}")
    if processor != "cpu":
        found.append(f"serverless endpoints have no GPUs: endpoint_instance_type {settings.endpoint_instance_type} "
                     "picks a GPU inference image; use a CPU type (e.g. ml.m5.large) with endpoint_mode=serverless")
    return found


def production_variant(variant_name: str, model_name: str, settings: Settings) -> dict[str, Any]:
    """A serverless ProductionVariant: ServerlessConfig instead of an instance type and count."""
    return {
        "VariantName": variant_name,
        "ModelName": model_name,
        "ServerlessConfig": {
            "MemorySizeInMB": settings.serverless_memory_mb,
            "MaxConcurrency": settings.serverless_max_concurrency,
        },
    }


def mode_of(endpoint_config: Mapping[str, Any]) -> str:
    """realtime or serverless, from a DescribeEndpointConfig answer."""
    variants = endpoint_config.get("ProductionVariants") or [{}]
    return SERVERLESS if variants[0].get("ServerlessConfig") else "realtime"


def mode_change_problem(live_mode: str | None, settings: Settings) -> str | None:
    """Why the live endpoint cannot be updated to this run's mode, or None."""
    wanted = settings.endpoint_mode
    if live_mode is None or live_mode == wanted:
        return None
    return (f"the live endpoint is {live_mode} and this run deploys {wanted}: UpdateEndpoint cannot switch "
            "between real-time and serverless (serverless-endpoints-update.html); delete the endpoint "
            "(aws sagemaker delete-endpoint) to change its mode, or keep EndpointMode")
