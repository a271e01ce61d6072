"""The pipeline's pure decisions about the endpoint: how to deploy a new config to it (create, recreate,
update or resume) and what to undo after a failure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlpipeline import rollout, serverless
from mlpipeline.errors import EndpointDeploymentFailed
from mlpipeline.job_progress import ENDPOINT_TERMINAL_STATUSES, configs_in_use, terminal_reason
from mlpipeline.run_state import RunState
from mlpipeline.settings import Settings


def plan_deployment(
    endpoint: Mapping[str, Any] | None,
    live_instance_type: str | None,
    new_instance_type: str,
    autoscaling_registered: bool,
    new_config: str | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """create, recreate, update, or resume (a retried Deploy whose first attempt got as far as creating or
    updating the endpoint with `new_config`: nothing to call again); whether autoscaling must be
    deregistered first; which retained variant properties the update must take from the new config.

    AWS documents that an endpoint whose variant is registered with Application Auto Scaling cannot be
    updated to a different instance type: deregister the scalable target first, register again after
    (ConfigureAutoscaling does once the endpoint is InService, Cleanup if the run fails). On a type change
    the live instance count is not retained either: autoscaling sized it for the old instance type.

    An update's "fleet" is the instance count it deploys (the live DesiredInstanceCount, retained, or the
    new config's on a type change); with `settings`, the rollout is checked against it before any call,
    so a live fleet autoscaling left too small for a canary or linear step fails here, clearly, and not
    as UpdateEndpoint's ValidationException.
    """
    if endpoint is None:
        return {"action": "create", "deregister_autoscaling": False, "exclude_retained": []}
    status = endpoint["EndpointStatus"]
    if status == "Failed":
        # A failed endpoint serves nothing and cannot be updated: delete it and create it anew.
        return {"action": "recreate", "deregister_autoscaling": autoscaling_registered, "exclude_retained": []}
    if status in ENDPOINT_TERMINAL_STATUSES:
        raise EndpointDeploymentFailed(
            f"{terminal_reason(endpoint)}; it needs an operator before the pipeline can deploy to it"
        )
    if status in ("Creating", "Updating") and new_config is not None and new_config in configs_in_use(endpoint):
        return {"action": "resume", "deregister_autoscaling": False, "exclude_retained": []}
    if status != "InService":
        raise EndpointDeploymentFailed(
            f"endpoint {endpoint['EndpointName']} is {status}: another deployment is in progress; retry later"
        )
    changes_type = live_instance_type is not None and live_instance_type != new_instance_type
    fleet = None
    if settings is not None:
        live_count = (endpoint.get("ProductionVariants") or [{}])[0].get("DesiredInstanceCount")
        fleet = settings.endpoint_instance_count if changes_type or not live_count else int(live_count)
        found = rollout.fleet_problems(settings, fleet)
        if found:
            raise EndpointDeploymentFailed(
                f"endpoint {endpoint['EndpointName']} would update {fleet} instance(s): " + "; ".join(found)
            )
    return {
        "action": "update",
        "deregister_autoscaling": autoscaling_registered and changes_type,
        "exclude_retained": ["DesiredInstanceCount"] if changes_type else [],
        "fleet": fleet,
    }



def plan_cleanup(
    run: RunState,
    *,
    tuning: Mapping[str, Any] | None,
    training: Mapping[str, Any] | None,
    endpoint: Mapping[str, Any] | None,
    model_exists: bool,
    config_exists: bool,
    deploy_attempted: bool,
    autoscaling_registered: bool,
    extraction: Mapping[str, Any] | None = None,
) -> list[dict[str, str]]:
    """What to undo after a failure, in order, as [{"action", "name"}].

    Stops this run's running jobs (the feature extraction's too); deletes a new endpoint of this run that
    failed; deletes this run's endpoint config and model unless the endpoint serves them or is deploying
    them (an update in progress names the new config only in PendingDeploymentSummary, and SageMaker says
    never to delete a config while UpdateEndpoint or CreateEndpoint runs on it); and, when this run got as
    far as Deploy and the
    endpoint is InService without a scalable target, registers autoscaling again: Deploy may have
    deregistered it before an UpdateEndpoint that failed or rolled back, whatever Deploy managed to
    return. The live endpoint serving another config is never deleted.
    """
    actions: list[dict[str, str]] = []
    running = ("InProgress",)
    if extraction is not None and extraction.get("TrainingJobStatus") in running:
        actions.append({"action": "stop_training_job", "name": extraction["TrainingJobName"]})
    if tuning is not None and tuning.get("HyperParameterTuningJobStatus") in running:
        actions.append({"action": "stop_tuning_job", "name": run.tuning_job_name})
    if training is not None and training.get("TrainingJobStatus") in running:
        actions.append({"action": "stop_training_job", "name": run.training_job_name})
    ours = run.endpoint_config_name in configs_in_use(endpoint)
    if (
        endpoint is not None
        and endpoint["EndpointStatus"] == "Failed"
        and endpoint.get("EndpointConfigName") == run.endpoint_config_name
    ):
        actions.append({"action": "delete_endpoint", "name": endpoint["EndpointName"]})
        ours = False
    if not ours:
        if config_exists:
            actions.append({"action": "delete_endpoint_config", "name": run.endpoint_config_name})
        if model_exists:
            actions.append({"action": "delete_model", "name": run.model_name})
    if (
        deploy_attempted
        and endpoint is not None
        and endpoint["EndpointStatus"] == "InService"
        and not autoscaling_registered
        and not serverless.is_serverless(run.settings)  # a serverless endpoint has no scalable target
    ):
        actions.append({"action": "register_autoscaling", "name": endpoint["EndpointName"]})
    return actions
