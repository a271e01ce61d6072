"""Cleanup: after any failure, undo what this run started (mlpipeline.deployment_plan.plan_cleanup decides).

Input {"state": the whole execution state, with "error" and, when Validate got that far, "run"}.
Output {"actions": [{"action", "name"}]} (what was done).
"""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger
from mlpipeline import approval, aws, deployment_plan, deployment_requests, function_env
from mlpipeline.errors import translate_aws_errors
from mlpipeline.run_state import RunState

logger = Logger(service="cleanup")


# This function's variables in template.yaml (mlpipeline.function_env).
ENVIRONMENT = function_env.read("endpoint_name")


def _deploy_attempted(state: dict[str, Any]) -> bool:
    gate, decided = state.get("gate") or {}, state.get("approval") or {}
    return gate.get("passed") is True and (not gate.get("awaits_approval") or decided.get("approved") is True)


@translate_aws_errors
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    state = event["state"]
    logger.append_keys(run_id=None)  # until the state names one (a warm start may carry the last run's)
    if not isinstance(state.get("run"), dict) or "run_id" not in state["run"]:
        return {"actions": []}  # failed before anything was created
    run = RunState.from_event(state["run"])
    logger.append_keys(run_id=run.run_id)
    sagemaker = boto3.client("sagemaker")
    autoscaling = boto3.client("application-autoscaling")
    endpoint_name = ENVIRONMENT.endpoint_name
    # PrepareFeatures' answer names the extraction job it started (None when it reused a feature set).
    extraction_job = (state.get("features") or {}).get("job_name")
    started_tuning = "tuning" in state
    started_training = "training" in state
    registered = aws.scalable_target_registered(autoscaling, endpoint_name)
    _describe = aws.describe_or_none
    actions = deployment_plan.plan_cleanup(
        run,
        tuning=_describe(
            sagemaker.describe_hyper_parameter_tuning_job, HyperParameterTuningJobName=run.tuning_job_name
        )
        if started_tuning
        else None,
        training=_describe(sagemaker.describe_training_job, TrainingJobName=run.training_job_name)
        if started_training
        else None,
        endpoint=_describe(sagemaker.describe_endpoint, EndpointName=endpoint_name),
        model_exists=_describe(sagemaker.describe_model, ModelName=run.model_name) is not None,
        config_exists=_describe(sagemaker.describe_endpoint_config, EndpointConfigName=run.endpoint_config_name)
        is not None,
        # The gate passed, so Deploy ran (at least in part): it may have deregistered autoscaling
        # before it failed, and then never returned its output.
        # (With ApprovalMode=manual, only once a person approved it.)
        deploy_attempted=_deploy_attempted(state),
        autoscaling_registered=registered,
        extraction=_describe(sagemaker.describe_training_job, TrainingJobName=extraction_job)
        if extraction_job
        else None,
    )
    for step in actions:
        action, name = step["action"], step["name"]
        if aws.sagemaker_action(sagemaker, action, name):
            continue
        if action == "register_autoscaling":
            autoscaling.register_scalable_target(
                **deployment_requests.register_scalable_target_request(name, run.settings))
            autoscaling.put_scaling_policy(**deployment_requests.scaling_policy_request(name, run.settings))
    abandoned = approval.abandoned(state)
    if abandoned is not None:
        boto3.client("sagemaker").update_model_package(**approval.expiry_request(abandoned))
        boto3.client("s3").delete_object(Bucket=run.bucket, Key=approval.token_key(abandoned.model_package_arn))
        actions.append({"action": "reject_model_package", "name": abandoned.model_package_arn})
    logger.info("cleaned up", extra={"actions": actions})
    return {"actions": actions}
