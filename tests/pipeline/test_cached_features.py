"""Tuning on cached backbone features, through the real ASL and the real handlers (moto + SageMakerSim):
a frozen backbone extracts its features once (one training job with train.py --extract-features-only),
the tuning trials read them as their `features` channel on CachedFeaturesTuningInstanceType, and the
final training job trains on the images as before; a rerun on the same data reuses the feature set with
no job; an extraction failure goes to Cleanup. conftest.py evaluates every call as IAM would."""

from __future__ import annotations

import json

import pipeline_world as pw
from mlpipeline import feature_sets
from mlpipeline.run_state import RunState

from imgclf import contract


def _tuning_definition(world: pw.PipelineWorld, run: dict) -> dict:
    return world.sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=run["tuning_job_name"])[
        "TrainingJobDefinition"
    ]


def test_extraction_then_tuning_on_the_features_channel_then_final_training_on_images(
    world: pw.PipelineWorld,
) -> None:
    execution = world.run(pw.upload_dataset(world.s3), "cached")
    assert execution["status"] == "SUCCEEDED", execution
    states = world.states_entered(execution["executionArn"])
    order = ["Validate", "UseCachedFeatures?", "PrepareFeatures", "FeaturesReady?", "WaitForExtraction",
             "DescribeExtraction", "ExtractionDone?", "CollectFeatures", "StartTuning", "StartTraining"]
    assert _dedupe([s for s in states if s in order]) == order
    out = pw.execution_output(execution)
    run, features = out["run"], out["features"]
    assert features["ready"] and not features["reused"]
    assert features["job_name"] == feature_sets.extraction_job_name(RunState.from_event(run))
    assert world.sim.calls.count("CreateTrainingJob[extraction]") == 1
    # the extraction: train.py's extract-only mode on the images, on the training instance type, its feature
    # set synced to the content-addressed prefix in the data bucket
    extraction = world.sagemaker.describe_training_job(TrainingJobName=features["job_name"])
    assert json.loads(extraction["HyperParameters"][contract.EXTRACT_FEATURES_HYPERPARAMETER]) is True
    assert extraction["ResourceConfig"]["InstanceType"] == pw.parameter_defaults()["TrainingInstanceType"]
    assert extraction["CheckpointConfig"]["S3Uri"] == features["s3_uri"]
    assert features["s3_uri"] == f"s3://{pw.BUCKET}/features/{features['feature_set']}/"
    # the trials: only the features channel, on the cached-features instance type (ml.m5.large) and its image
    definition = _tuning_definition(world, run)
    [channel] = definition["InputDataConfig"]
    assert channel["ChannelName"] == contract.FEATURES_CHANNEL
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == f"{features['s3_uri']}{contract.FEATURE_CACHE_FOLDER}/"
    assert definition["ResourceConfig"]["InstanceType"] == "ml.m5.large"
    assert definition["AlgorithmSpecification"]["TrainingImage"] == run["cached_tuning_image_uri"]
    assert "-cpu-" in run["cached_tuning_image_uri"]
    # the final training: the images (train/valid/test), on the training instance type, as before
    final = world.sagemaker.describe_training_job(TrainingJobName=run["training_job_name"])
    assert [c["ChannelName"] for c in final["InputDataConfig"]] == ["train", "valid", "test"]
    assert contract.EXTRACT_FEATURES_HYPERPARAMETER not in final["HyperParameters"]
    assert final["HyperParameters"]["lr"] == "0.0123"


def _dedupe(states: list[str]) -> list[str]:
    out: list[str] = []
    for state in states:
        if state not in out:
            out.append(state)
    return out


def test_a_rerun_on_the_same_data_reuses_the_feature_set_with_no_extraction_job(world: pw.PipelineWorld) -> None:
    first = world.run(pw.upload_dataset(world.s3), "first")
    assert first["status"] == "SUCCEEDED", first
    # A new dataset version (new manifest, other overrides), the same images: the same content key.
    key = pw.upload_dataset(world.s3, manifest={"version": "v2", "overrides": {"epochs": 3}})
    second = world.run(key, "second")
    assert second["status"] == "SUCCEEDED", second
    assert world.sim.calls.count("CreateTrainingJob[extraction]") == 1  # the first run's only
    states = world.states_entered(second["executionArn"])
    assert "PrepareFeatures" in states and "WaitForExtraction" not in states and "CollectFeatures" not in states
    features = pw.execution_output(second)["features"]
    assert features["ready"] and features["reused"] and features["job_name"] is None
    assert features["feature_set"] == pw.execution_output(first)["features"]["feature_set"]
    [channel] = _tuning_definition(world, pw.execution_output(second)["run"])["InputDataConfig"]
    assert channel["ChannelName"] == contract.FEATURES_CHANNEL
    # changed images: another feature set, extracted again
    world.s3.put_object(Bucket=pw.BUCKET, Key=f"datasets/{pw.DATASET}/train/001.Affenpinscher/img_1.jpg", Body=b"x")
    world.s3.put_object(Bucket=pw.BUCKET, Key=f"datasets/{pw.DATASET}/manifest.json", Body=b'{"version": "v3"}')
    third = world.run(f"datasets/{pw.DATASET}/manifest.json", "third")
    assert third["status"] == "SUCCEEDED", third
    assert world.sim.calls.count("CreateTrainingJob[extraction]") == 2
    assert pw.execution_output(third)["features"]["feature_set"] != features["feature_set"]


def test_unfrozen_backbone_tunes_on_images_with_no_extraction(world: pw.PipelineWorld) -> None:
    key = pw.upload_dataset(world.s3, manifest={"version": "v1", "overrides": {"freeze_backbone": False}})
    execution = world.run(key, "unfrozen")
    assert execution["status"] == "SUCCEEDED", execution
    states = world.states_entered(execution["executionArn"])
    assert "UseCachedFeatures?" in states and "PrepareFeatures" not in states
    assert "CreateTrainingJob[extraction]" not in world.sim.calls
    run = pw.execution_output(execution)["run"]
    definition = _tuning_definition(world, run)
    assert [c["ChannelName"] for c in definition["InputDataConfig"]] == ["train", "valid", "test"]
    assert definition["ResourceConfig"]["InstanceType"] == pw.parameter_defaults()["TuningInstanceType"]
    assert json.loads(definition["StaticHyperParameters"]["freeze-backbone"]) is False



def test_extraction_failure_goes_to_cleanup_and_no_tuning_starts(world: pw.PipelineWorld) -> None:
    world.sim.extraction_outcome = "Failed"
    execution = world.run(pw.upload_dataset(world.s3), "extraction-failed")
    error, cause = world.failure(execution)
    assert error == "SageMakerJobFailed" and "CUDA out of memory" in cause
    states = world.states_entered(execution["executionArn"])
    assert states[-4:] == ["Cleanup", "ReportFailure", "NotifyFailure", "PipelineFailed"]
    assert "StartTuning" not in states and "CreateHyperParameterTuningJob" not in world.sim.calls


def test_a_completed_extraction_without_its_feature_set_fails_as_features_missing(world: pw.PipelineWorld) -> None:
    world.sim.extraction_uploads = False
    execution = world.run(pw.upload_dataset(world.s3), "no-upload")
    error, cause = world.failure(execution)
    assert error == "FeaturesMissing" and contract.FEATURE_SET_MANIFEST in cause
    assert "StartTuning" not in world.states_entered(execution["executionArn"])


def test_cleanup_stops_a_running_extraction(world: pw.PipelineWorld) -> None:
    # The extraction outlives its phase's last poll (PollLimitExceeded): Cleanup stops it.
    world.sim.polls = 10_000
    run_limit = {"extraction": 2}
    from mlpipeline import polling

    original = dict(polling.MAX_POLLS)
    polling.MAX_POLLS.update(run_limit)
    try:
        execution = world.run(pw.upload_dataset(world.s3), "stuck-extraction")
    finally:
        polling.MAX_POLLS.clear()
        polling.MAX_POLLS.update(original)
    error, _ = world.failure(execution)
    assert error == "PollLimitExceeded"
    name = _output_of_failed(world, execution)
    assert "StopTrainingJob" in world.sim.calls
    assert world.sagemaker.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "Stopping"


def _output_of_failed(world: pw.PipelineWorld, execution: dict) -> str:
    """The extraction job's name, from PrepareFeatures' answer in the history."""
    history = world.sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)["events"]
    for event in history:
        details = event.get("stateExitedEventDetails")
        if details and details["name"] == "PrepareFeatures":
            return json.loads(details["output"])["features"]["job_name"]
    raise AssertionError("PrepareFeatures never exited")


def test_a_retried_start_carries_on_with_its_own_extraction_and_another_execution_is_a_duplicate(
    world: pw.PipelineWorld,
) -> None:
    import pytest
    from mlpipeline.errors import DuplicateRun

    world.sim.polls = 100  # the extraction stays InProgress
    pw.upload_dataset(world.s3)
    validate = pw.load_handler("validate").handler
    version = world.s3.head_object(Bucket=pw.BUCKET, Key=f"datasets/{pw.DATASET}/manifest.json")["VersionId"]
    defaults = json.loads((pw.REPO / "events" / "validate.json").read_text())["defaults"]
    run = validate({"event": pw.s3_event(f"datasets/{pw.DATASET}/manifest.json", version_id=version),
                    "defaults": defaults}, None)
    prepare = pw.load_handler("prepare_features").handler
    first = "arn:aws:states:us-east-1:123456789012:execution:imgclf-pipeline:first"
    answer = prepare({"phase": "start", "run": run, "execution_arn": first}, None)
    assert not answer["ready"] and answer["job_name"] == feature_sets.extraction_job_name(RunState.from_event(run))
    # the same execution's retry (the first attempt's answer was lost): the same job, no second one
    assert prepare({"phase": "start", "run": run, "execution_arn": first}, None) == answer
    assert world.sim.calls.count("CreateTrainingJob[extraction]") == 2  # the retry's create met ResourceInUse
    second = "arn:aws:states:us-east-1:123456789012:execution:imgclf-pipeline:second"
    with pytest.raises(DuplicateRun, match="another execution"):
        prepare({"phase": "start", "run": run, "execution_arn": second}, None)
