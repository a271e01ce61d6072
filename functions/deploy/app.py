"""Deploy: CreateModel + CreateEndpointConfig, then CreateEndpoint, or a blue/green UpdateEndpoint with
automatic rollback, in the run's rollout steps (ALL_AT_ONCE, CANARY, LINEAR; mlpipeline.rollout), for a
live endpoint that keeps its (autoscaled) instance count (deregistering
autoscaling first when the instance type changes; ConfigureAutoscaling, or Cleanup after a failure,
registers it again).

The model is the model.tar.gz the gate names (gate.model_data_url: the one QualityGate registered, or the
redeployed package's, mlpipeline.redeploy), with the run's inference image.

Input {"run", "gate"}; output {"endpoint_name", "endpoint_config_name", "model_name",
"action", "autoscaling_deregistered", "exclude_retained", "previous_config"}.
"""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError
from mlpipeline import aws, deployment_plan, deployment_requests, function_env, serverless
from mlpipeline.errors import EndpointDeploymentFailed, TransientAwsError, error_code, translate_aws_errors
from mlpipeline.run_state import RunState

logger = Logger(service="deploy")


# This function's variables in template.yaml (mlpipeline.function_env).
ENVIRONMENT = function_env.read(
    "endpoint_name", "sagemaker_role_arn", "errors_alarm_name", "latency_alarm_name"
)


# What CreateEndpoint/UpdateEndpoint answer for a config they cannot see: also, for a moment, for the
# config CreateEndpointConfig has just created (eventual consistency), so that one answer is retried.
CONFIG_NOT_FOUND = "Could not find endpoint configuration"


def _using_new_config(call: Any, **request: Any) -> None:
    """CreateEndpoint / UpdateEndpoint, with "config not found" raised as TransientAwsError: the ASL
    retries Deploy with backoff (idempotent: the model and config already exist, the plan is made again).
    Only that message; any other ValidationException is a real error."""
    try:
        call(**request)
    except ClientError as error:
        if error_code(error) == "ValidationException" and CONFIG_NOT_FOUND in str(error):
            raise TransientAwsError(
                f"endpoint config {request['EndpointConfigName']} not visible yet after CreateEndpointConfig "
                f"(eventual consistency): {error}"
            ) from error
        raise


@translate_aws_errors
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    run = RunState.from_event(event["run"])
    logger.append_keys(run_id=run.run_id)
    endpoint_name = ENVIRONMENT.endpoint_name
    sagemaker = boto3.client("sagemaker")
    autoscaling = boto3.client("application-autoscaling")

    endpoint = aws.describe_or_none(sagemaker.describe_endpoint, EndpointName=endpoint_name)
    live_type = None
    if endpoint is not None and endpoint["EndpointStatus"] == "InService":
        live_config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
        live_type = live_config["ProductionVariants"][0].get("InstanceType")  # none when serverless
        mode_problem = serverless.mode_change_problem(serverless.mode_of(live_config), run.settings)
        if mode_problem:
            raise EndpointDeploymentFailed(f"endpoint {endpoint_name}: {mode_problem}")
    registered = aws.scalable_target_registered(autoscaling, endpoint_name)
    plan = deployment_plan.plan_deployment(
        endpoint,
        live_type,
        run.settings.endpoint_instance_type,
        registered,
        run.endpoint_config_name,
        run.settings,
    )

    model = deployment_requests.model_request(run, ENVIRONMENT.sagemaker_role_arn, event["gate"]["model_data_url"])
    aws.create_once(sagemaker.create_model, **model)
    aws.create_once(
        sagemaker.create_endpoint_config,
        **deployment_requests.endpoint_config_request(run, event["gate"]["test_accuracy"]),
    )
    if plan["deregister_autoscaling"]:
        autoscaling.deregister_scalable_target(**deployment_requests.scalable_target_id(endpoint_name))
    if plan["action"] == "recreate":
        sagemaker.delete_endpoint(EndpointName=endpoint_name)
        sagemaker.get_waiter("endpoint_deleted").wait(
            EndpointName=endpoint_name, WaiterConfig={"Delay": 10, "MaxAttempts": 25}
        )
    if plan["action"] == "resume":
        pass  # a retry: this run's create or update is already under way
    elif plan["action"] in ("create", "recreate"):
        _using_new_config(sagemaker.create_endpoint, **deployment_requests.create_endpoint_request(endpoint_name, run))
    else:
        alarms = [ENVIRONMENT.errors_alarm_name, ENVIRONMENT.latency_alarm_name]
        update = deployment_requests.update_endpoint_request(
            endpoint_name, run, alarms, plan["exclude_retained"], plan["fleet"]
        )
        _using_new_config(sagemaker.update_endpoint, **update)
    previous = endpoint["EndpointConfigName"] if endpoint else None
    logger.info("endpoint deployment", extra={"action": plan["action"], "endpoint_name": endpoint_name,
                                              "endpoint_config_name": run.endpoint_config_name})
    return {
        "endpoint_name": endpoint_name,
        "endpoint_config_name": run.endpoint_config_name,
        "model_name": run.model_name,
        "action": plan["action"],
        "autoscaling_deregistered": plan["deregister_autoscaling"],
        "exclude_retained": plan["exclude_retained"],
        "previous_config": previous if previous != run.endpoint_config_name else None,
    }
