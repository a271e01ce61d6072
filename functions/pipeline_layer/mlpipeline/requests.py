"""Pure builders of every SageMaker and Application Auto Scaling request the pipeline makes, and the
pure decisions around them (is a job done, create or update the endpoint, what to clean up).

Each builder returns the keyword arguments of one boto3 call, e.g.
`sagemaker.create_training_job(**training_job_request(...))`; the tests validate every one of them
with botocore's own parameter validator against the service model.

The `run` argument is the dict ValidateFunction returns (see runs.plan_run): names, S3 locations,
images and the run's Settings as a dict.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from imgclf import contract, gate
from mlpipeline import approval, images, rollout, serverless
from mlpipeline.errors import EndpointDeploymentFailed, SageMakerJobFailed

VARIANT_NAME = "AllTraffic"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
VOLUME_SIZE_GB = 50
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
# SageMaker Debugger is closed to new customers (since 2026-07-30) and SageMaker Profiler ends on
# 2027-06-30, so by default a training job uses neither: train.py evaluates the four rules of the design
# card itself (imgclf.debugger), prints each result as a metric line that MetricDefinitions read
# (contract.METRIC_REGEXES: "rule LossNotDecreasing", ...; 1 = IssuesFound), writes debugger-report.json,
# and sends its learning curves and torch.profiler trace to TensorBoard (TensorBoardOutputConfig).
# Without ProfilerConfig SageMaker still turns on Debugger's basic system monitoring for every training
# job ("By default, for all SageMaker training jobs, Debugger collects resource utilization metrics ...
# every 500 milliseconds", https://docs.aws.amazon.com/sagemaker/latest/dg/debugger-configure-system-monitoring.html),
# so the default request carries ProfilerConfig.DisableProfiler=True, as the SageMaker SDK sends for
# disable_profiler=True (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProfilerConfig.html).
# A tuning job's TrainingJobDefinition has no Debugger, Profiler or TensorBoard fields at all.
#
# The stack parameter EnableSageMakerDebugger (settings.enable_sagemaker_debugger) opts in, for accounts
# that still have Debugger: the same four rules as built-in rules (`rule_to_invoke` names them and the
# regional rule-evaluator image runs them, as the SDK's Rule.sagemaker(rule_configs.<rule>()) does), the
# ProfilerReport rule and system monitoring every 500 ms. Caveat: the smdebug hook that saves the rules'
# tensors is not in the PyTorch 2.x containers, so those rule jobs may find nothing to evaluate; the
# in-script rules stay the signal. The rule jobs never fail the training job. The rules: contract.DEBUGGER_RULES.
# Tensors those rules read (the SDK's defaults for them); saved every 100 steps to keep the output small.
DEBUG_COLLECTIONS = ("losses", "weights", "gradients", "biases")
DEBUG_SAVE_INTERVAL = "100"
PROFILING_INTERVAL_MS = 500
# Blue/green: shift all traffic at once, then keep the old fleet for a baking period during which the
# endpoint alarms may trigger an automatic rollback.
TERMINATION_WAIT_SECONDS = 120
# Managed spot: a job may wait for capacity up to this many times its run time (MaxWaitTimeInSeconds).
SPOT_WAIT_FACTOR = 2
# The tag on the tuning job naming the Step Functions execution that created it: a retried StartTuning
# tells its own job (carry on) from another execution's (DuplicateRun) by it.
EXECUTION_TAG_KEY = "imgclf:execution"
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
        "freeze-backbone": _hp(s["freeze_backbone"]),
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
        stopping["MaxWaitTimeInSeconds"] = SPOT_WAIT_FACTOR * s["max_runtime_seconds"]
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


def execution_tag(execution_arn: str) -> dict[str, str]:
    """The tag naming the execution that starts the tuning job. An ARN within the tag value's pattern and
    length (letters, digits, _.:/=+-@ and spaces, at most 256) is the value itself; any other (an execution
    name may hold characters such as ! or ( ) is its sha256, so that two executions never share a value."""
    if len(execution_arn) <= 256 and re.fullmatch(r"[\w.:/=+\-@ ]*", execution_arn, flags=re.ASCII):
        value = execution_arn
    else:
        value = "sha256:" + hashlib.sha256(execution_arn.encode()).hexdigest()
    return {"Key": EXECUTION_TAG_KEY, "Value": value}


def started_by(tags: list[Mapping[str, str]], execution_arn: str) -> bool:
    """Whether a resource's tags (ListTags) say that this execution created it."""
    return execution_tag(execution_arn) in [{"Key": t["Key"], "Value": t["Value"]} for t in tags]


# ---------------------------------------------------------------------------------------------------
# Cached backbone features (imgclf.features): one extraction job per feature set, head-only tuning trials
# (the state machine's PrepareFeatures / DescribeExtraction / CollectFeatures states).

FEATURE_SETS_PREFIX = "features/"


def dataset_content_digest(listing: Mapping[str, tuple[str, list[Mapping[str, Any]]]]) -> str:
    """The dataset's content as S3 lists it: {split: (its prefix, ListObjectsV2 Contents)} -> sha256 over
    every object's split, key below the split's prefix, size and ETag. The same files uploaded again (a new
    manifest version, other overrides) give the same digest; a file added, removed or changed gives another.
    (A multipart upload's ETag depends on its part size, so the same bytes uploaded another way may miss: an
    extraction, never a wrong reuse. The container checks every file's SHA-256 before it reuses a file.)"""
    rows = sorted((split, o["Key"].removeprefix(prefix), int(o["Size"]), str(o["ETag"]).strip('"'))
                  for split, (prefix, contents) in listing.items() for o in contents)
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def feature_set_id(run: Mapping[str, Any], content_digest: str) -> str:
    """What the features depend on, as far as the pipeline knows without torch: the dataset's content
    (dataset_content_digest), the backbone and its weights source, the numerics (precision on the training
    instance type's device) and the code version (the source tarball's content-addressed key). The container
    checks the rest (the weights' own digest, the preprocessing, each file's bytes) before it reuses or
    trusts a file."""
    s = run["settings"]
    description = {"content": content_digest, "backbone": s["backbone"],
                   "pretrained": s["pretrained"], "precision": s["precision"],
                   "device": images.processor_for(s["training_instance_type"]), "code": run["source_s3_uri"]}
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:32]


def feature_set_s3_uri(run: Mapping[str, Any], feature_set: str) -> str:
    """The extraction job's CheckpointConfig.S3Uri: SageMaker syncs /opt/ml/checkpoints there (and downloads
    it into the container at start, so a rerun finds its files and extracts nothing)
    https://docs.aws.amazon.com/sagemaker/latest/dg/model-checkpoints-enable.html"""
    return f"s3://{run['bucket']}/{FEATURE_SETS_PREFIX}{feature_set}/"


def feature_set_manifest_key(feature_set: str) -> str:
    """The S3 key whose presence means the feature set is complete (written last by the extraction job)."""
    return f"{FEATURE_SETS_PREFIX}{feature_set}/{contract.FEATURE_CACHE_FOLDER}/{contract.FEATURE_SET_MANIFEST}"


def extraction_job_name(run: Mapping[str, Any]) -> str:
    return f"{run['run_id']}-features"  # run ids are <= 32 characters; SageMaker allows 63


def extraction_job_request(run: Mapping[str, Any], role_arn: str, feature_set: str,
                           execution_arn: str) -> dict[str, Any]:
    """CreateTrainingJob for the extraction: train.py --extract-features-only on the images, on the training
    instance type (GPU when configured), its feature set synced to the data bucket through CheckpointConfig;
    tagged with the execution that starts it (a retry carries on with its own job)."""
    s = run["settings"]
    name = extraction_job_name(run)
    hyperparameters = {**static_hyperparameters(run, name), contract.EXTRACT_FEATURES_HYPERPARAMETER: _hp(True)}
    return {
        "TrainingJobName": name,
        "HyperParameters": hyperparameters,
        "AlgorithmSpecification": {"TrainingImage": run["training_image_uri"], "TrainingInputMode": "File"},
        "RoleArn": role_arn,
        "InputDataConfig": input_channels(run),
        "OutputDataConfig": {"S3OutputPath": f"{run['output_s3_uri']}features/"},
        "ResourceConfig": {"InstanceType": s["training_instance_type"], "InstanceCount": 1,
                           "VolumeSizeInGB": VOLUME_SIZE_GB},
        "StoppingCondition": {"MaxRuntimeInSeconds": s["max_runtime_seconds"]},
        "CheckpointConfig": {"S3Uri": feature_set_s3_uri(run, feature_set), "LocalPath": CHECKPOINT_LOCAL_PATH},
        "Tags": [*_tags(run), execution_tag(execution_arn)],
    }


def features_channel(run: Mapping[str, Any], feature_set: str, input_mode: str = "File") -> dict[str, Any]:
    """The tuning trials' only channel: the feature set (SM_CHANNEL_FEATURES). FastFile streams the files
    instead of copying them first; File copies them (a few MB for dogImages either way)."""
    if input_mode not in ("File", "FastFile"):
        raise ValueError(f"features channel input mode must be File or FastFile, not {input_mode!r}")
    return {
        "ChannelName": contract.FEATURES_CHANNEL,
        "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix",
            "S3Uri": f"{feature_set_s3_uri(run, feature_set)}{contract.FEATURE_CACHE_FOLDER}/",
            "S3DataDistributionType": "FullyReplicated"}},
        "InputMode": input_mode,
    }


def cached_features_tuning(run: Mapping[str, Any], feature_set: str) -> dict[str, str]:
    """tuning_job_request's `features` for this run: its feature set, the trials' instance type and image."""
    return {"feature_set": feature_set, "instance_type": run["settings"]["cached_features_tuning_instance_type"],
            "image_uri": run["cached_tuning_image_uri"]}


def tuning_job_request(run: Mapping[str, Any], role_arn: str, execution_arn: str,
                       features: Mapping[str, str] | None = None) -> dict[str, Any]:
    """CreateHyperParameterTuningJob: Bayesian search minimizing 'average test loss' from the training log,
    tagged with the execution that starts it. With `features` ({"feature_set", "instance_type", "image_uri",
    optional "input_mode"}), the trials read only that feature set and train the head on that instance."""
    s = run["settings"]
    name = run["tuning_job_name"]
    definition: dict[str, Any] = {
        "StaticHyperParameters": static_hyperparameters(run),
        "AlgorithmSpecification": {
            "TrainingImage": features["image_uri"] if features else run["tuning_image_uri"],
            "TrainingInputMode": "File",
            "MetricDefinitions": contract.metric_definitions(),
        },
        "RoleArn": role_arn,
        "InputDataConfig": (
            [features_channel(run, features["feature_set"], features.get("input_mode", "File"))] if features
            else input_channels(run)
        ),
        "OutputDataConfig": {"S3OutputPath": f"{run['output_s3_uri']}tuning/"},
        "ResourceConfig": {
            "InstanceType": features["instance_type"] if features else s["tuning_instance_type"],
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
        "Tags": [*_tags(run), execution_tag(execution_arn)],
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


def tensorboard_output_config(run: Mapping[str, Any], job_name: str) -> dict[str, str]:
    """Where SageMaker uploads the job's TensorBoard logdir while it runs: beside its model artifacts,
    s3://<bucket>/models/<job>/tensorboard/ (a TensorBoard or SageMaker TensorBoard app opens that prefix)."""
    return {
        "S3OutputPath": f"{run['output_s3_uri']}{job_name}/{contract.TENSORBOARD_FOLDER}/",
        "LocalPath": contract.TENSORBOARD_LOCAL_PATH,
    }


def _debugger_and_profiler(run: Mapping[str, Any], debugger_image: str | None) -> dict[str, Any]:
    """No Debugger or Profiler feature unless the stack opted in (see the note on DEBUG_COLLECTIONS)."""
    if not run["settings"]["enable_sagemaker_debugger"]:
        return {"ProfilerConfig": {"DisableProfiler": True}}
    if not debugger_image:
        raise ValueError("enable_sagemaker_debugger needs the region's Debugger rule-evaluator image")
    return {
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
            for rule in contract.DEBUGGER_RULES.values()
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
    }


def training_job_request(
    run: Mapping[str, Any], role_arn: str, tuned: Mapping[str, str], debugger_image: str | None = None
) -> dict[str, Any]:
    """CreateTrainingJob for the final model: best hyperparameters, metrics (the rules' too), TensorBoard
    output; Debugger rules and Profiler only when the stack opts in (`debugger_image` is then required)."""
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
        "TensorBoardOutputConfig": tensorboard_output_config(run, name),
        **_debugger_and_profiler(run, debugger_image),
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


# DescribeEndpoint's EndpointStatus values
# (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribeEndpoint.html#sagemaker-DescribeEndpoint-response-EndpointStatus).
# These end a deployment: Failed (DeleteEndpoint is the only operation left), OutOfService (not available
# to take requests), UpdateRollbackFailed (both the deployment and its rollback failed: the endpoint serves
# a mix of the old and new configs until an operator remedies it) and Deleting. Creating, Updating,
# SystemUpdating and RollingBack pass by themselves; only InService is ready.
ENDPOINT_TERMINAL_STATUSES = {
    "Failed": "failed",
    "OutOfService": "is out of service (not available to take requests)",
    "UpdateRollbackFailed": (
        "is UpdateRollbackFailed: both the deployment and its automatic rollback failed, and it serves a mix "
        "of the old and new endpoint configs until an operator restores it (see Rolling Deployments)"
    ),
    "Deleting": "is being deleted",
}


def configs_in_use(endpoint: Mapping[str, Any] | None) -> set[str]:
    """The endpoint configs an endpoint serves or is deploying. While an update is in progress,
    EndpointConfigName still names the old config and the new one is PendingDeploymentSummary's
    (returned "only when the endpoint is creating or updating with a new endpoint configuration":
    https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribeEndpoint.html)."""
    if endpoint is None:
        return set()
    pending = endpoint.get("PendingDeploymentSummary") or {}
    return {name for name in (endpoint.get("EndpointConfigName"), pending.get("EndpointConfigName")) if name}


def _terminal_reason(description: Mapping[str, Any]) -> str:
    status = description["EndpointStatus"]
    reason = description.get("FailureReason") or "no reason given"
    return f"endpoint {description['EndpointName']} {ENDPOINT_TERMINAL_STATUSES[status]}: {reason}"


def endpoint_progress(description: Mapping[str, Any], expected_config: str) -> dict[str, Any]:
    """Done when InService with `expected_config`; raises EndpointDeploymentFailed when the endpoint reached
    a terminal status or a blue/green update rolled back."""
    status = description["EndpointStatus"]
    name = description["EndpointName"]
    if status in ENDPOINT_TERMINAL_STATUSES:
        raise EndpointDeploymentFailed(_terminal_reason(description))
    if status == "InService" and description.get("EndpointConfigName") != expected_config:
        # UpdateEndpoint switches the status to Updating synchronously, so InService on the old config
        # after our update means the blue/green deployment rolled back (an alarm fired or it failed).
        reason = description.get("FailureReason") or "an endpoint alarm fired during the baking period"
        raise EndpointDeploymentFailed(
            f"endpoint {name} rolled back to {description.get('EndpointConfigName')}: {reason}"
        )
    return {
        "done": status == "InService",
        "status": status,
        "pending_config": (description.get("PendingDeploymentSummary") or {}).get("EndpointConfigName"),
    }


def unknown_progress(reason: str) -> dict[str, Any]:
    """A status check AWS throttled or failed transiently: not done as far as we know, poll again (it
    counts against the phase's poll cap, so a lasting outage still ends in Cleanup)."""
    return {"done": False, "status": f"unknown ({reason})"}


# ---------------------------------------------------------------------------------------------------
# Quality gate and model registry.


def model_package_request(
    run: Mapping[str, Any], group_name: str, training_job: Mapping[str, Any], decision: gate.GateDecision
) -> dict[str, Any]:
    """CreateModelPackage: a version in the group; Rejected when the model failed the gate, else Approved
    or, with ApprovalMode=manual, PendingManualApproval until a person decides (mlpipeline.approval)."""
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
        "ModelApprovalStatus": approval.registered_status(decision.passed, s["approval_mode"]),
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


# Where the endpoint's sampled requests and answers go. SageMaker appends
# <endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl ("The format of the Amazon S3 path is:
# s3:///{endpoint-name}/{variant-name}/yyyy/mm/dd/hh/filename.jsonl",
# https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-data-capture-endpoint.html).
DATA_CAPTURE_PREFIX = "data-capture/"
# CaptureContentTypeHeader names the content types SageMaker records as JSON or CSV text; every other type
# is base64-encoded ("If no headers are specified SageMaker AI will by default base64 encode when capturing
# the data", API_DataCaptureConfig.html). So the JSON answer is listed, and the image types
# (contract.IMAGE_CONTENT_TYPES) are deliberately not: a JPEG is not JSON text, it must come back BASE64.
DATA_CAPTURE_JSON_CONTENT_TYPES = [contract.JSON_CONTENT_TYPE]


def data_capture_s3_uri(run: Mapping[str, Any]) -> str:
    return f"s3://{run['bucket']}/{DATA_CAPTURE_PREFIX}"


def data_capture_config(run: Mapping[str, Any]) -> dict[str, Any] | None:
    """CreateEndpointConfig's DataCaptureConfig for the run's sampling percentage, None when it is 0 (off).

    Requests (Input) and answers (Output) both, so a captured image comes with the label the model gave it
    (the relabeling starts from it: imgclf_cli.capture). SageMaker writes the files as the model's execution
    role (s3:PutObject under DATA_CAPTURE_PREFIX in the template); no KmsKeyId: the bucket's default
    encryption (aws/s3) applies. Real-time instance endpoints only: AWS lists data capture among the
    features Serverless Inference does not support (sagemaker/latest/dg/serverless-endpoints.html)."""
    percentage = int(run["settings"].get("data_capture_percentage", 0))
    if percentage == 0:
        return None
    return {
        "EnableCapture": True,
        "InitialSamplingPercentage": percentage,
        "DestinationS3Uri": data_capture_s3_uri(run),
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"JsonContentTypes": list(DATA_CAPTURE_JSON_CONTENT_TYPES)},
    }


def endpoint_config_request(run: Mapping[str, Any], test_accuracy: float) -> dict[str, Any]:
    """The config carries the model's accuracy as a tag: the next run's gate compares with it."""
    s = run["settings"]
    capture = data_capture_config(run)
    variant = {
        "VariantName": VARIANT_NAME,
        "ModelName": run["model_name"],
        "InitialInstanceCount": s["endpoint_instance_count"],
        "InstanceType": s["endpoint_instance_type"],
        "InitialVariantWeight": 1.0,
    }
    if serverless.is_serverless(s):  # EndpointMode=serverless: ServerlessConfig, no instances
        variant = serverless.production_variant(VARIANT_NAME, run["model_name"], s)
    return {
        **({"DataCaptureConfig": capture} if capture else {}),
        "EndpointConfigName": run["endpoint_config_name"],
        "ProductionVariants": [variant],
        "Tags": [*_tags(run), gate.accuracy_tag(test_accuracy)],
    }


def create_endpoint_request(endpoint_name: str, run: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "EndpointName": endpoint_name,
        "EndpointConfigName": run["endpoint_config_name"],
        "Tags": _tags(run),
    }


def update_endpoint_request(
    endpoint_name: str,
    run: Mapping[str, Any],
    alarm_names: list[str],
    exclude_retained: list[str] | tuple[str, ...] = (),
    fleet: int | None = None,
) -> dict[str, Any]:
    """Zero-downtime blue/green update: the new fleet takes the traffic in the settings' rollout steps
    (mlpipeline.rollout; `fleet` is the variant's instance count the update deploys, default the new
    config's), each step bakes under the alarms, and either endpoint alarm firing rolls back to the old
    config automatically.

    RetainAllVariantProperties keeps the live variant's instance count (which autoscaling may have scaled
    out) and weight; without it UpdateEndpoint resets them to the new config's InitialInstanceCount /
    InitialVariantWeight ("The default is false"). `exclude_retained` (VariantPropertyType values) takes
    those from the new config instead. The instance type is not a retained property (VariantPropertyType
    has DesiredInstanceCount, DesiredWeight, DataCaptureConfig), so a new type always takes effect.
    https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_UpdateEndpoint.html,
    https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_VariantProperty.html,
    https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-update.html
    """
    s = run["settings"]
    fleet = s["endpoint_instance_count"] if fleet is None else fleet
    routing = rollout.traffic_routing(s, fleet)
    request: dict[str, Any] = {
        "EndpointName": endpoint_name,
        "EndpointConfigName": run["endpoint_config_name"],
        "RetainAllVariantProperties": True,
        "DeploymentConfig": {
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": routing,
                "TerminationWaitInSeconds": TERMINATION_WAIT_SECONDS,
                "MaximumExecutionTimeoutInSeconds": rollout.execution_timeout_seconds(
                    s["rollout_strategy"],
                    s["rollout_step_type"],
                    s["rollout_step_size"],
                    s["rollout_wait_seconds"],
                    fleet,
                ),
            },
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": name} for name in alarm_names]},
        },
    }
    if exclude_retained:
        request["ExcludeRetainedVariantProperties"] = [
            {"VariantPropertyType": prop} for prop in exclude_retained
        ]
    return request


def plan_deployment(
    endpoint: Mapping[str, Any] | None,
    live_instance_type: str | None,
    new_instance_type: str,
    autoscaling_registered: bool,
    new_config: str | None = None,
    settings: Mapping[str, Any] | None = None,
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
            f"{_terminal_reason(endpoint)}; it needs an operator before the pipeline can deploy to it"
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
        fleet = settings["endpoint_instance_count"] if changes_type or not live_count else int(live_count)
        found = rollout.problems(
            settings["rollout_strategy"],
            settings["rollout_step_type"],
            settings["rollout_step_size"],
            settings["rollout_wait_seconds"],
            fleet,
        )
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
        actions.append({"action": "stop_tuning_job", "name": run["tuning_job_name"]})
    if training is not None and training.get("TrainingJobStatus") in running:
        actions.append({"action": "stop_training_job", "name": run["training_job_name"]})
    ours = run["endpoint_config_name"] in configs_in_use(endpoint)
    if (
        endpoint is not None
        and endpoint["EndpointStatus"] == "Failed"
        and endpoint.get("EndpointConfigName") == run["endpoint_config_name"]
    ):
        actions.append({"action": "delete_endpoint", "name": endpoint["EndpointName"]})
        ours = False
    if not ours:
        if config_exists:
            actions.append({"action": "delete_endpoint_config", "name": run["endpoint_config_name"]})
        if model_exists:
            actions.append({"action": "delete_model", "name": run["model_name"]})
    if (
        deploy_attempted
        and endpoint is not None
        and endpoint["EndpointStatus"] == "InService"
        and not autoscaling_registered
        and not serverless.is_serverless(run["settings"])  # a serverless endpoint has no scalable target
    ):
        actions.append({"action": "register_autoscaling", "name": endpoint["EndpointName"]})
    return actions
