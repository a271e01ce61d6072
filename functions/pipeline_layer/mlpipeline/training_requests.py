"""Pure builders of the training and tuning requests the pipeline makes (CreateTrainingJob for the feature
extraction and the final model, CreateHyperParameterTuningJob), and the tuned values of the best trial.

Each builder returns the keyword arguments of one boto3 call, e.g.
`sagemaker.create_training_job(**training_job_request(...))`; the tests validate every one of them
with botocore's own parameter validator against the service model.

The `run` argument is the run's RunState (mlpipeline.run_state: what ValidateFunction decided, runs.plan_run):
names, S3 locations, images and the run's Settings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from imgclf import contract
from mlpipeline import feature_sets, images
from mlpipeline.debugger_config import debugger_and_profiler
from mlpipeline.errors import SageMakerJobFailed
from mlpipeline.resource_tags import execution_tag, run_tags
from mlpipeline.run_state import RunState
from mlpipeline.settings import Settings

VOLUME_SIZE_GB = 50
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
# Managed spot: a job may wait for capacity up to this many times its run time (MaxWaitTimeInSeconds).
SPOT_WAIT_FACTOR = 2
# SageMaker's PyTorch framework containers find the user code through these (what the SDK sets).
PROGRAM_HYPERPARAMETER = "sagemaker_program"
SUBMIT_DIRECTORY_HYPERPARAMETER = "sagemaker_submit_directory"
# Data-parallel training with several instances: on GPU instances SageMaker's `torch_distributed`
# launcher runs torchrun on every host (one process per GPU; train.py reads RANK/WORLD_SIZE); CPU
# instances (which that launcher does not support) run `python train.py` once per host and train.py
# forms the process group from SM_HOSTS/SM_CURRENT_HOST itself.
DISTRIBUTED_HYPERPARAMETER = "sagemaker_torch_distributed_enabled"


def _hp(value: Any) -> str:
    """Hyperparameter values JSON-encoded, as the SageMaker SDK sends them (train.py accepts both forms)."""
    return json.dumps(value)


def static_hyperparameters(run: RunState, job_name: str | None = None) -> dict[str, str]:
    """Everything train.py gets besides the tuned lr and batch-size (its CLI: --epochs --backbone ...)."""
    s = run.settings
    hyperparameters = {
        "epochs": _hp(s.epochs),
        "backbone": _hp(s.backbone),
        "pretrained": _hp(s.pretrained),
        "patience": _hp(s.patience),
        "precision": _hp(s.precision),
        "freeze-backbone": _hp(s.freeze_backbone),
        PROGRAM_HYPERPARAMETER: _hp("train.py"),
        SUBMIT_DIRECTORY_HYPERPARAMETER: _hp(run.source_s3_uri),
        "sagemaker_region": _hp(run.region),
        "sagemaker_container_log_level": "20",
    }
    if job_name:
        hyperparameters["sagemaker_job_name"] = _hp(job_name)
    return hyperparameters


def input_channels(run: RunState) -> list[dict[str, Any]]:
    """One channel per split (train/valid/test -> SM_CHANNEL_TRAIN/VALID/TEST, read by imgclf.data)."""
    return [
        {
            "ChannelName": split,
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": f"{run.dataset_s3_uri}{folder}/",
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
            "InputMode": "File",
        }
        for split, folder in run.splits.items()
    ]


def _spot(run: RunState, job_name: str) -> dict[str, Any]:
    s = run.settings
    stopping: dict[str, Any] = {"MaxRuntimeInSeconds": s.max_runtime_seconds}
    out: dict[str, Any] = {"StoppingCondition": stopping}
    if s.use_spot_instances:
        # Spot capacity may vanish: wait up to twice the run time for it, resume from checkpoints.
        stopping["MaxWaitTimeInSeconds"] = SPOT_WAIT_FACTOR * s.max_runtime_seconds
        out["EnableManagedSpotTraining"] = True
        out["CheckpointConfig"] = {
            "S3Uri": f"{run.checkpoint_s3_uri}{job_name}/",
            "LocalPath": CHECKPOINT_LOCAL_PATH,
        }
    return out


def parameter_ranges(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """contract.SEARCH_SPACE, with the run's lr bounds and batch sizes (stack parameters / manifest)."""
    continuous, categorical = [], []
    for parameter in contract.SEARCH_SPACE:
        if isinstance(parameter, contract.ContinuousParameter):
            low, high = parameter.min_value, parameter.max_value
            if parameter.name == "lr":
                low, high = settings.lr_min, settings.lr_max
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
                list(settings.batch_sizes) if parameter.name == "batch-size" else list(parameter.values)
            )
            categorical.append({"Name": parameter.name, "Values": values})
    return {
        "ContinuousParameterRanges": continuous,
        "CategoricalParameterRanges": categorical,
        "IntegerParameterRanges": [],
    }



def extraction_job_request(run: RunState, role_arn: str, feature_set: str,
                           execution_arn: str) -> dict[str, Any]:
    """CreateTrainingJob for the extraction: train.py --extract-features-only on the images, on the training
    instance type (GPU when configured), its feature set synced to the data bucket through CheckpointConfig;
    tagged with the execution that starts it (a retry carries on with its own job)."""
    s = run.settings
    name = feature_sets.extraction_job_name(run)
    hyperparameters = {**static_hyperparameters(run, name), contract.EXTRACT_FEATURES_HYPERPARAMETER: _hp(True)}
    return {
        "TrainingJobName": name,
        "HyperParameters": hyperparameters,
        "AlgorithmSpecification": {"TrainingImage": run.training_image_uri, "TrainingInputMode": "File"},
        "RoleArn": role_arn,
        "InputDataConfig": input_channels(run),
        "OutputDataConfig": {"S3OutputPath": f"{run.output_s3_uri}features/"},
        "ResourceConfig": {"InstanceType": s.training_instance_type, "InstanceCount": 1,
                           "VolumeSizeInGB": VOLUME_SIZE_GB},
        "StoppingCondition": {"MaxRuntimeInSeconds": s.max_runtime_seconds},
        "CheckpointConfig": {"S3Uri": feature_sets.feature_set_s3_uri(run, feature_set),
                             "LocalPath": CHECKPOINT_LOCAL_PATH},
        "Tags": [*run_tags(run), execution_tag(execution_arn)],
    }


def features_channel(run: RunState, feature_set: str, input_mode: str = "File") -> dict[str, Any]:
    """The tuning trials' only channel: the feature set (SM_CHANNEL_FEATURES). FastFile streams the files
    instead of copying them first; File copies them (a few MB for dogImages either way)."""
    if input_mode not in ("File", "FastFile"):
        raise ValueError(f"features channel input mode must be File or FastFile, not {input_mode!r}")
    return {
        "ChannelName": contract.FEATURES_CHANNEL,
        "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix",
            "S3Uri": f"{feature_sets.feature_set_s3_uri(run, feature_set)}{contract.FEATURE_CACHE_FOLDER}/",
            "S3DataDistributionType": "FullyReplicated"}},
        "InputMode": input_mode,
    }



def tuning_job_request(run: RunState, role_arn: str, execution_arn: str,
                       features: Mapping[str, str] | None = None) -> dict[str, Any]:
    """CreateHyperParameterTuningJob: Bayesian search minimizing 'average test loss' from the training log,
    tagged with the execution that starts it. With `features` ({"feature_set", "instance_type", "image_uri",
    optional "input_mode"}), the trials read only that feature set and train the head on that instance."""
    s = run.settings
    name = run.tuning_job_name
    definition: dict[str, Any] = {
        "StaticHyperParameters": static_hyperparameters(run),
        "AlgorithmSpecification": {
            "TrainingImage": features["image_uri"] if features else run.tuning_image_uri,
            "TrainingInputMode": "File",
            "MetricDefinitions": contract.metric_definitions(),
        },
        "RoleArn": role_arn,
        "InputDataConfig": (
            [features_channel(run, features["feature_set"], features.get("input_mode", "File"))] if features
            else input_channels(run)
        ),
        "OutputDataConfig": {"S3OutputPath": f"{run.output_s3_uri}tuning/"},
        "ResourceConfig": {
            "InstanceType": features["instance_type"] if features else s.tuning_instance_type,
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
                "MaxNumberOfTrainingJobs": s.max_jobs,
                "MaxParallelTrainingJobs": s.max_parallel_jobs,
            },
            "ParameterRanges": parameter_ranges(s),
            "TrainingJobEarlyStoppingType": "Auto",
        },
        "TrainingJobDefinition": definition,
        "Tags": [*run_tags(run), execution_tag(execution_arn)],
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


def tensorboard_output_config(run: RunState, job_name: str) -> dict[str, str]:
    """Where SageMaker uploads the job's TensorBoard logdir while it runs: beside its model artifacts,
    s3://<bucket>/models/<job>/tensorboard/ (a TensorBoard or SageMaker TensorBoard app opens that prefix)."""
    return {
        "S3OutputPath": f"{run.output_s3_uri}{job_name}/{contract.TENSORBOARD_FOLDER}/",
        "LocalPath": contract.TENSORBOARD_LOCAL_PATH,
    }



def training_job_request(
    run: RunState, role_arn: str, tuned: Mapping[str, str], debugger_image: str | None = None
) -> dict[str, Any]:
    """CreateTrainingJob for the final model: best hyperparameters, metrics (the rules' too), TensorBoard
    output; Debugger rules and Profiler only when the stack opts in (`debugger_image` is then required)."""
    s = run.settings
    name = run.training_job_name
    hyperparameters = {**static_hyperparameters(run, name), **{k: str(v) for k, v in tuned.items()}}
    # The deployed model's code/ carries its serving wheels, so endpoint instances install without PyPI.
    hyperparameters[contract.BUNDLE_SERVING_WHEELS_HYPERPARAMETER] = _hp(True)
    if s.training_instance_count > 1 and images.processor_for(s.training_instance_type) == "gpu":
        hyperparameters[DISTRIBUTED_HYPERPARAMETER] = _hp(True)
    return {
        "TrainingJobName": name,
        "HyperParameters": hyperparameters,
        "AlgorithmSpecification": {
            "TrainingImage": run.training_image_uri,
            "TrainingInputMode": "File",
            "MetricDefinitions": contract.metric_definitions(),
        },
        "RoleArn": role_arn,
        "InputDataConfig": input_channels(run),
        "OutputDataConfig": {"S3OutputPath": run.output_s3_uri},
        "ResourceConfig": {
            "InstanceType": s.training_instance_type,
            "InstanceCount": s.training_instance_count,
            "VolumeSizeInGB": VOLUME_SIZE_GB,
        },
        **_spot(run, name),
        "TensorBoardOutputConfig": tensorboard_output_config(run, name),
        **debugger_and_profiler(run, debugger_image),
        "Tags": run_tags(run),
    }
