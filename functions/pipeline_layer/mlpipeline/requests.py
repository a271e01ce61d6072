"""Pure builders of every SageMaker and Application Auto Scaling request the pipeline makes, and the
pure decisions around them (is a job done, create or update the endpoint, what to clean up).

Each builder returns the keyword arguments of one boto3 call, e.g.
`sagemaker.create_training_job(**training_job_request(...))`; the tests validate every one of them
with botocore's own parameter validator against the service model.

The `run` argument is the dict ValidateFunction returns (see runs.plan_run): names, S3 locations,
images and the run's Settings as a dict.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from imgclf import contract, gate
from mlpipeline import images
from mlpipeline.errors import EndpointDeploymentFailed, SageMakerJobFailed

VARIANT_NAME = "AllTraffic"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
VOLUME_SIZE_GB = 50
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
# The four Debugger rules of the design card: built-in rules, so `rule_to_invoke` names them and the
# regional rule-evaluator image runs them (as the SDK's Rule.sagemaker(rule_configs.<rule>()) does).
# Caveat: the smdebug hook that saves their tensors is not in the PyTorch 2.x containers, so these rule
# jobs may find nothing to evaluate; train.py evaluates the same four rules itself (imgclf.debugger,
# debugger-report.json in the job's output), which is the authoritative signal. The rule jobs stay for
# the console view and for containers that still carry the hook; they never fail the training job.
DEBUGGER_RULES = contract.DEBUGGER_RULES
# Tensors those rules read (the SDK's defaults for them); saved every 100 steps to keep the output small.
DEBUG_COLLECTIONS = ("losses", "weights", "gradients", "biases")
DEBUG_SAVE_INTERVAL = "100"
PROFILING_INTERVAL_MS = 500
# Blue/green: shift all traffic at once, then keep the old fleet for a baking period during which the
# endpoint alarms may trigger an automatic rollback.
BAKING_PERIOD_SECONDS = 600
TERMINATION_WAIT_SECONDS = 120
MAX_DEPLOYMENT_SECONDS = 3600
# SageMaker's PyTorch framework containers find the user code through these (what the SDK sets).
PROGRAM_HYPERPARAMETER = "sagemaker_program"
SUBMIT_DIRECTORY_HYPERPARAMETER = "sagemaker_submit_directory"
# Data-parallel training with several instances: on GPU instances SageMaker's `torch_distributed`
# launcher runs torchrun on every host (one process per GPU; train.py reads RANK/WORLD_SIZE); CPU
# instances (which that launcher does not support) run `python train.py` once per host and train.py
# forms the process group from SM_HOSTS/SM_CURRENT_HOST itself.
DISTRIBUTED_HYPERPARAMETER = "sagemaker_torch_distributed_enabled"


def _tag_value(text: str) -> str:
    """SageMaker tag values allow letters, digits, spaces and _.:/=+-@ (a dataset folder may hold more)."""
    return re.sub(r"[^\w.:/=+\-@ ]", "_", text, flags=re.ASCII)[:256]


def _tags(run: Mapping[str, Any]) -> list[dict[str, str]]:
    return [
        {"Key": "imgclf:run-id", "Value": run["run_id"]},
        {"Key": "imgclf:dataset", "Value": _tag_value(run["dataset"])},
    ]


def _hp(value: Any) -> str:
    """Hyperparameter values JSON-encoded, as the SageMaker SDK sends them (train.py accepts both forms)."""
    return json.dumps(value)


def static_hyperparameters(run: Mapping[str, Any], job_name: str | None = None) -> dict[str, str]:
    """Everything train.py gets besides the tuned lr and batch-size (its CLI: --epochs --backbone ...)."""
    s = run["settings"]
    hyperparameters = {
        "epochs": _hp(s["epochs"]),
        "backbone": _hp(s["backbone"]),
        "pretrained": _hp(s["pretrained"]),
        "patience": _hp(s["patience"]),
        "precision": _hp(s["precision"]),
        PROGRAM_HYPERPARAMETER: _hp("train.py"),
        SUBMIT_DIRECTORY_HYPERPARAMETER: _hp(run["source_s3_uri"]),
        "sagemaker_region": _hp(run["region"]),
        "sagemaker_container_log_level": "20",
    }
    if job_name:
        hyperparameters["sagemaker_job_name"] = _hp(job_name)
    return hyperparameters


def input_channels(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One channel per split (train/valid/test -> SM_CHANNEL_TRAIN/VALID/TEST, read by imgclf.data)."""
    return [
        {
            "ChannelName": split,
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": f"{run['dataset_s3_uri']}{folder}/",
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
            "InputMode": "File",
        }
        for split, folder in run["splits"].items()
    ]


def _spot(run: Mapping[str, Any], job_name: str) -> dict[str, Any]:
    s = run["settings"]
    stopping: dict[str, Any] = {"MaxRuntimeInSeconds": s["max_runtime_seconds"]}
    out: dict[str, Any] = {"StoppingCondition": stopping}
    if s["use_spot_instances"]:
        # Spot capacity may vanish: wait up to twice the run time for it, resume from checkpoints.
        stopping["MaxWaitTimeInSeconds"] = 2 * s["max_runtime_seconds"]
        out["EnableManagedSpotTraining"] = True
        out["CheckpointConfig"] = {
            "S3Uri": f"{run['checkpoint_s3_uri']}{job_name}/",
            "LocalPath": CHECKPOINT_LOCAL_PATH,
        }
    return out


def parameter_ranges(settings: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """contract.SEARCH_SPACE, with the run's lr bounds and batch sizes (stack parameters / manifest)."""
    continuous, categorical = [], []
    for parameter in contract.SEARCH_SPACE:
        if isinstance(parameter, contract.ContinuousParameter):
            low, high = parameter.min_value, parameter.max_value
            if parameter.name == "lr":
                low, high = settings["lr_min"], settings["lr_max"]
            continuous.append(
                {
                    "Name": parameter.name,
                    "MinValue": str(low),
                    "MaxValue": str(high),
                    "ScalingType": parameter.scaling,
                }
            )
        else:
            values = (
                list(settings["batch_sizes"]) if parameter.name == "batch-size" else list(parameter.values)
            )
            categorical.append({"Name": parameter.name, "Values": values})
    return {
        "ContinuousParameterRanges": continuous,
        "CategoricalParameterRanges": categorical,
        "IntegerParameterRanges": [],
    }


def tuning_job_request(run: Mapping[str, Any], role_arn: str) -> dict[str, Any]:
    """CreateHyperParameterTuningJob: Bayesian search minimizing 'average test loss' from the training log."""
    s = run["settings"]
    name = run["tuning_job_name"]
    definition: dict[str, Any] = {
        "StaticHyperParameters": static_hyperparameters(run),
        "AlgorithmSpecification": {
            "TrainingImage": run["tuning_image_uri"],
            "TrainingInputMode": "File",
            "MetricDefinitions": contract.metric_definitions(),
        },
        "RoleArn": role_arn,
        "InputDataConfig": input_channels(run),
        "OutputDataConfig": {"S3OutputPath": f"{run['output_s3_uri']}tuning/"},
        "ResourceConfig": {
            "InstanceType": s["tuning_instance_type"],
            "InstanceCount": 1,
            "VolumeSizeInGB": VOLUME_SIZE_GB,
        },
        **_spot(run, name),
    }
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": {
            "Strategy": "Bayesian",
            "HyperParameterTuningJobObjective": {
                "Type": contract.OBJECTIVE_TYPE,
                "MetricName": contract.OBJECTIVE_METRIC_NAME,
            },
            "ResourceLimits": {
                "MaxNumberOfTrainingJobs": s["max_jobs"],
                "MaxParallelTrainingJobs": s["max_parallel_jobs"],
            },
            "ParameterRanges": parameter_ranges(s),
            "TrainingJobEarlyStoppingType": "Auto",
        },
        "TrainingJobDefinition": definition,
        "Tags": _tags(run),
    }


def tuned_hyperparameters(best_training_job: Mapping[str, Any]) -> dict[str, str]:
    """The tuned values of the best trial, restricted to the search space's names."""
    tuned = best_training_job.get("TunedHyperParameters") or {}
    names = {p.name for p in contract.SEARCH_SPACE}
    missing = names - set(tuned)
    if missing:
        raise SageMakerJobFailed(
            f"best training job {best_training_job.get('TrainingJobName')} lacks tuned "
            f"hyperparameters {sorted(missing)}"
        )
    return {name: str(tuned[name]) for name in sorted(names)}


def training_job_request(
    run: Mapping[str, Any], role_arn: str, tuned: Mapping[str, str], debugger_image: str
) -> dict[str, Any]:
    """CreateTrainingJob for the final model: best hyperparameters, Debugger rules, Profiler."""
    s = run["settings"]
    name = run["training_job_name"]
    hyperparameters = {**static_hyperparameters(run, name), **{k: str(v) for k, v in tuned.items()}}
    # The deployed model's code/ carries its serving wheels, so endpoint instances install without PyPI.
    hyperparameters[contract.BUNDLE_SERVING_WHEELS_HYPERPARAMETER] = _hp(True)
    if s["training_instance_count"] > 1 and images.processor_for(s["training_instance_type"]) == "gpu":
        hyperparameters[DISTRIBUTED_HYPERPARAMETER] = _hp(True)
    return {
        "TrainingJobName": name,
        "HyperParameters": hyperparameters,
        "AlgorithmSpecification": {
            "TrainingImage": run["training_image_uri"],
            "TrainingInputMode": "File",
            "MetricDefinitions": contract.metric_definitions(),
        },
        "RoleArn": role_arn,
        "InputDataConfig": input_channels(run),
        "OutputDataConfig": {"S3OutputPath": run["output_s3_uri"]},
        "ResourceConfig": {
            "InstanceType": s["training_instance_type"],
            "InstanceCount": s["training_instance_count"],
            "VolumeSizeInGB": VOLUME_SIZE_GB,
        },
        **_spot(run, name),
        "DebugHookConfig": {
            "S3OutputPath": run["debugger_s3_uri"],
            "CollectionConfigurations": [
                {"CollectionName": c, "CollectionParameters": {"save_interval": DEBUG_SAVE_INTERVAL}}
                for c in DEBUG_COLLECTIONS
            ],
        },
        "DebugRuleConfigurations": [
            {
                "RuleConfigurationName": rule,
                "RuleEvaluatorImage": debugger_image,
                "RuleParameters": {"rule_to_invoke": rule},
            }
            for rule in DEBUGGER_RULES.values()
        ],
        "ProfilerConfig": {
            "S3OutputPath": run["profiler_s3_uri"],
            "ProfilingIntervalInMilliseconds": PROFILING_INTERVAL_MS,
        },
        "ProfilerRuleConfigurations": [
            {
                "RuleConfigurationName": "ProfilerReport",
                "RuleEvaluatorImage": debugger_image,
                "RuleParameters": {"rule_to_invoke": "ProfilerReport"},
            },
        ],
        "Tags": _tags(run),
    }


# ---------------------------------------------------------------------------------------------------
# Job progress (pure functions of Describe* answers).


def tuning_progress(description: Mapping[str, Any]) -> dict[str, Any]:
    """{"done", "status", "best_training_job"}; raises SageMakerJobFailed for Failed/Stopped, no best job."""
    status = description["HyperParameterTuningJobStatus"]
    name = description["HyperParameterTuningJobName"]
    if status in ("Failed", "Stopped"):
        reason = description.get("FailureReason") or "no reason given"
        raise SageMakerJobFailed(f"tuning job {name} {status.lower()}: {reason}")
    if status != "Completed":
        return {"done": False, "status": status}
    best = description.get("BestTrainingJob")
    if not best or best.get("TrainingJobStatus") != "Completed":
        counters = description.get("TrainingJobStatusCounters", {})
        raise SageMakerJobFailed(
            f"tuning job {name} completed without a successful training job ({counters})"
        )
    return {
        "done": True,
        "status": status,
        "best_training_job": {
            "TrainingJobName": best["TrainingJobName"],
            "TunedHyperParameters": dict(best.get("TunedHyperParameters", {})),
            "FinalObjectiveValue": (best.get("FinalHyperParameterTuningJobObjectiveMetric") or {}).get(
                "Value"
            ),
        },
    }


def training_progress(description: Mapping[str, Any]) -> dict[str, Any]:
    """{"done", "status", "secondary_status", "rule_issues"}; raises SageMakerJobFailed for Failed/Stopped."""
    status = description["TrainingJobStatus"]
    name = description["TrainingJobName"]
    if status in ("Failed", "Stopped"):
        reason = description.get("FailureReason") or "no reason given"
        raise SageMakerJobFailed(f"training job {name} {status.lower()}: {reason}")
    issues = [
        r["RuleConfigurationName"]
        for r in description.get("DebugRuleEvaluationStatuses", [])
        + description.get("ProfilerRuleEvaluationStatuses", [])
        if r.get("RuleEvaluationStatus") == "IssuesFound"
    ]
    return {
        "done": status == "Completed",
        "status": status,
        "secondary_status": description.get("SecondaryStatus"),
        "rule_issues": issues,
    }


def endpoint_progress(description: Mapping[str, Any], expected_config: str) -> dict[str, Any]:
    """Done when InService with `expected_config`; raises EndpointDeploymentFailed on failure or rollback."""
    status = description["EndpointStatus"]
    name = description["EndpointName"]
    if status == "Failed":
        raise EndpointDeploymentFailed(
            f"endpoint {name} failed: {description.get('FailureReason') or 'no reason'}"
        )
    if status == "InService" and description.get("EndpointConfigName") != expected_config:
        # UpdateEndpoint switches the status to Updating synchronously, so InService on the old config
        # after our update means the blue/green deployment rolled back (an alarm fired or it failed).
        reason = description.get("FailureReason") or "an endpoint alarm fired during the baking period"
        raise EndpointDeploymentFailed(
            f"endpoint {name} rolled back to {description.get('EndpointConfigName')}: {reason}"
        )
    return {"done": status == "InService", "status": status}


# ---------------------------------------------------------------------------------------------------
# Quality gate and model registry.


def model_package_request(
    run: Mapping[str, Any], group_name: str, training_job: Mapping[str, Any], decision: gate.GateDecision
) -> dict[str, Any]:
    """CreateModelPackage: a version in the group, Approved iff the model passed the gate."""
    s = run["settings"]
    metadata = {
        "run_id": run["run_id"],
        "dataset": _tag_value(run["dataset"]),
        "test_accuracy": "none" if decision.test_accuracy is None else f"{decision.test_accuracy:.6f}",
        "live_accuracy": "none" if decision.live_accuracy is None else f"{decision.live_accuracy:.6f}",
        "threshold": f"{decision.threshold:.6f}",
        "gate": "passed" if decision.passed else "rejected",  # the reason is in the description
    }
    return {
        "ModelPackageGroupName": group_name,
        "ModelPackageDescription": f"{run['dataset']} ({run['version_token']}): {decision.reason}"[:1024],
        "InferenceSpecification": {
            "Containers": [container_definition(run, training_job)],
            "SupportedContentTypes": list(contract.IMAGE_CONTENT_TYPES),
            "SupportedResponseMIMETypes": [contract.JSON_CONTENT_TYPE],
            "SupportedRealtimeInferenceInstanceTypes": [s["endpoint_instance_type"]],
        },
        "ModelApprovalStatus": "Approved" if decision.passed else "Rejected",
        "MetadataProperties": {"GeneratedBy": training_job["TrainingJobArn"]},
        "CustomerMetadataProperties": metadata,
    }


# ---------------------------------------------------------------------------------------------------
# Deployment.


def container_definition(run: Mapping[str, Any], training_job: Mapping[str, Any]) -> dict[str, Any]:
    """The PyTorch inference container with model.tar.gz (model.pt, metadata.json, code/inference.py)."""
    return {
        "Image": run["inference_image_uri"],
        "ModelDataUrl": training_job["ModelArtifacts"]["S3ModelArtifacts"],
        "Environment": {
            "SAGEMAKER_PROGRAM": "inference.py",
            "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
            "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
            "SAGEMAKER_REGION": run["region"],
        },
    }


def model_request(run: Mapping[str, Any], role_arn: str, training_job: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "ModelName": run["model_name"],
        "ExecutionRoleArn": role_arn,
        "PrimaryContainer": container_definition(run, training_job),
        "Tags": _tags(run),
    }


def endpoint_config_request(run: Mapping[str, Any], test_accuracy: float) -> dict[str, Any]:
    """The config carries the model's accuracy as a tag: the next run's gate compares with it."""
    s = run["settings"]
    return {
        "EndpointConfigName": run["endpoint_config_name"],
        "ProductionVariants": [
            {
                "VariantName": VARIANT_NAME,
                "ModelName": run["model_name"],
                "InitialInstanceCount": s["endpoint_instance_count"],
                "InstanceType": s["endpoint_instance_type"],
                "InitialVariantWeight": 1.0,
            }
        ],
        "Tags": [*_tags(run), gate.accuracy_tag(test_accuracy)],
    }


def create_endpoint_request(endpoint_name: str, run: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "EndpointName": endpoint_name,
        "EndpointConfigName": run["endpoint_config_name"],
        "Tags": _tags(run),
    }


def update_endpoint_request(
    endpoint_name: str, run: Mapping[str, Any], alarm_names: list[str]
) -> dict[str, Any]:
    """Zero-downtime blue/green update: the new fleet takes all traffic, the old one stays for the baking
    period, and either endpoint alarm firing in that time rolls back to the old config automatically."""
    return {
        "EndpointName": endpoint_name,
        "EndpointConfigName": run["endpoint_config_name"],
        "DeploymentConfig": {
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": {
                    "Type": "ALL_AT_ONCE",
                    "WaitIntervalInSeconds": BAKING_PERIOD_SECONDS,
                },
                "TerminationWaitInSeconds": TERMINATION_WAIT_SECONDS,
                "MaximumExecutionTimeoutInSeconds": MAX_DEPLOYMENT_SECONDS,
            },
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": name} for name in alarm_names]},
        },
    }


def plan_deployment(
    endpoint: Mapping[str, Any] | None,
    live_instance_type: str | None,
    new_instance_type: str,
    autoscaling_registered: bool,
) -> dict[str, Any]:
    """create or update; whether autoscaling must be deregistered first.

    AWS documents that an endpoint whose variant is registered with Application Auto Scaling cannot be
    updated to a different instance type: deregister the scalable target first, register again after
    (ConfigureAutoscaling does, once the endpoint is InService).
    """
    if endpoint is None:
        return {"action": "create", "deregister_autoscaling": False}
    status = endpoint["EndpointStatus"]
    if status == "Failed":
        # A failed endpoint serves nothing and cannot be updated: delete it and create it anew.
        return {"action": "recreate", "deregister_autoscaling": autoscaling_registered}
    if status != "InService":
        raise EndpointDeploymentFailed(
            f"endpoint {endpoint['EndpointName']} is {status}: another deployment is in progress; retry later"
        )
    changes_type = live_instance_type is not None and live_instance_type != new_instance_type
    return {"action": "update", "deregister_autoscaling": autoscaling_registered and changes_type}


def scalable_target_id(endpoint_name: str) -> dict[str, str]:
    return {
        "ServiceNamespace": "sagemaker",
        "ResourceId": f"endpoint/{endpoint_name}/variant/{VARIANT_NAME}",
        "ScalableDimension": SCALABLE_DIMENSION,
    }


def register_scalable_target_request(endpoint_name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **scalable_target_id(endpoint_name),
        "MinCapacity": settings["autoscaling_min_capacity"],
        "MaxCapacity": settings["autoscaling_max_capacity"],
    }


def scaling_policy_request(endpoint_name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Target tracking on SageMakerVariantInvocationsPerInstance (invocations per instance per minute)."""
    return {
        "PolicyName": f"{endpoint_name}-invocations-per-instance",
        **scalable_target_id(endpoint_name),
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": float(settings["autoscaling_target_invocations"]),
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
            },
            "ScaleInCooldown": settings["scale_in_cooldown_seconds"],
            "ScaleOutCooldown": settings["scale_out_cooldown_seconds"],
        },
    }


# ---------------------------------------------------------------------------------------------------
# Cleanup after a failure.


def plan_cleanup(
    run: Mapping[str, Any],
    *,
    tuning: Mapping[str, Any] | None,
    training: Mapping[str, Any] | None,
    endpoint: Mapping[str, Any] | None,
    model_exists: bool,
    config_exists: bool,
    autoscaling_deregistered: bool,
) -> list[dict[str, str]]:
    """What to undo after a failure, in order, as [{"action", "name"}].

    Stops this run's running jobs; deletes a new endpoint that failed; deletes this run's endpoint config
    and model unless the endpoint serves them; and when the deployment had deregistered autoscaling but
    the endpoint still serves the previous config (rollback), registers autoscaling again for it.
    The live endpoint serving another config is never deleted.
    """
    actions: list[dict[str, str]] = []
    running = ("InProgress",)
    if tuning is not None and tuning.get("HyperParameterTuningJobStatus") in running:
        actions.append({"action": "stop_tuning_job", "name": run["tuning_job_name"]})
    if training is not None and training.get("TrainingJobStatus") in running:
        actions.append({"action": "stop_training_job", "name": run["training_job_name"]})
    ours = endpoint is not None and endpoint.get("EndpointConfigName") == run["endpoint_config_name"]
    if ours and endpoint is not None and endpoint["EndpointStatus"] == "Failed":
        actions.append({"action": "delete_endpoint", "name": endpoint["EndpointName"]})
        ours = False
    if not ours:
        if config_exists:
            actions.append({"action": "delete_endpoint_config", "name": run["endpoint_config_name"]})
        if model_exists:
            actions.append({"action": "delete_model", "name": run["model_name"]})
    if (
        autoscaling_deregistered
        and endpoint is not None
        and endpoint["EndpointStatus"] == "InService"
        and not ours
    ):
        actions.append({"action": "register_autoscaling", "name": endpoint["EndpointName"]})
    return actions
