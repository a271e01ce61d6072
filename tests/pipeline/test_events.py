"""Every events/ file (except the inference Lambda's) through its handler, in a moto world.

The files are inputs of a real execution (tests/pipeline/generate_events.py), so replaying them in
pipeline order against a fresh world must succeed step by step, with the deterministic names they carry.
"""

from __future__ import annotations

import json

import pipeline_world as pw

EVENTS = pw.REPO / "events"
# (file, function folder) in the order the state machine calls them.
HAPPY_PATH = [
    ("validate.json", "validate"),
    ("prepare_features_start.json", "prepare_features"),
    ("describe_job_extraction.json", "describe_job"),
    ("describe_job_extraction.json", "describe_job"),
    ("prepare_features_collect.json", "prepare_features"),
    ("start_tuning.json", "start_tuning"),
    ("describe_job_tuning.json", "describe_job"),
    ("describe_job_tuning.json", "describe_job"),
    ("start_training.json", "start_training"),
    ("describe_job_training.json", "describe_job"),
    ("describe_job_training.json", "describe_job"),
    ("quality_gate.json", "quality_gate"),
    ("deploy.json", "deploy"),
    ("describe_job_endpoint.json", "describe_job"),
    ("describe_job_endpoint.json", "describe_job"),
    ("smoke_test.json", "smoke_test"),
    ("configure_autoscaling.json", "configure_autoscaling"),
    ("notify_succeeded.json", "notify"),
]
FAILURE_PATH = [("cleanup.json", "cleanup"), ("notify_failed.json", "notify")]
# A redeploy by hand of the package version the happy path registered (its later states' inputs have the
# happy path's shape: the files above).
REDEPLOY_PATH = [("redeploy.json", "redeploy")]
STATE_MACHINE_INPUTS = ["start_execution.json", "s3_manifest_created.json", "redeploy_execution.json"]
# The report reads its execution's history (Step Functions transitions, Lambda time): replayed after an
# execution of the file's name has run.
AFTER_ITS_EXECUTION = [("report.json", "report")]
# ApprovalMode=manual (ApprovalFunction): replayed while a run of this world waits for a person.
APPROVAL_PATH = [("approval_request.json", "approval"), ("approval_decided.json", "approval"),
                 ("approval_expire.json", "approval")]


def _load(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def _as_uploaded_here(event: dict, s3) -> dict:
    """The file's S3 event with the version-id this world's S3 gave the same upload (a version-id names
    one put in one bucket; the file's comes from the world that generated it)."""
    detail = event["detail"]
    assert detail["object"].get("version-id"), "S3 events of a versioned bucket carry the put's version-id"
    version = s3.head_object(Bucket=detail["bucket"]["name"], Key=detail["object"]["key"])["VersionId"]
    return {**event, "detail": {**detail, "object": {**detail["object"], "version-id": version}}}


def test_every_pipeline_event_file_is_covered() -> None:
    covered = {name for name, _ in HAPPY_PATH + FAILURE_PATH + REDEPLOY_PATH + AFTER_ITS_EXECUTION + APPROVAL_PATH}
    covered |= set(STATE_MACHINE_INPUTS)
    on_disk = {p.name for p in EVENTS.glob("*.json") if not p.name.startswith("inference_")}
    assert on_disk == covered


def test_every_pipeline_function_has_an_event_file() -> None:
    """`sam local invoke <Function> -e events/<file>` works for each of them."""
    replayed = {folder for _, folder in HAPPY_PATH + FAILURE_PATH + REDEPLOY_PATH + AFTER_ITS_EXECUTION + APPROVAL_PATH}
    assert replayed == set(pw.FUNCTIONS.values())


def _waiting_manual_run(world: pw.PipelineWorld) -> tuple[str, str]:
    """A run with ApprovalMode=manual waiting for a person; its package is version 1 of the group, as in the
    world the files came from."""
    key = pw.upload_dataset(world.s3, manifest={"version": "replay", "overrides": {"approval_mode": "manual"}})
    arn = world.start(key, "replay-approval")
    return arn, world.waiting_for_approval(arn)


def test_approval_decided_event_resumes_a_waiting_run(world: pw.PipelineWorld) -> None:
    arn, package = _waiting_manual_run(world)
    event = _load("approval_decided.json")
    assert event["detail"]["ModelPackageArn"] == package and event["detail"]["ModelApprovalStatus"] == "Approved"
    world.sagemaker.update_model_package(ModelPackageArn=package, ModelApprovalStatus="Approved")
    answer = pw.deliver_event("approval", event)
    assert answer["resumed"] == arn and answer["approved"]
    execution = world.ended(arn)
    assert execution["status"] == "SUCCEEDED" and "Deploy" in world.states_entered(arn)


def test_approval_expire_and_request_files_replay(world: pw.PipelineWorld) -> None:
    arn, package = _waiting_manual_run(world)
    expire, request = _load("approval_expire.json"), _load("approval_request.json")
    assert expire["gate"]["model_package_arn"] == request["gate"]["model_package_arn"] == package
    pw.load_handler("approval").handler(expire, None)
    assert world.sagemaker.describe_model_package(ModelPackageName=package)["ModelApprovalStatus"] == "Rejected"
    # the request of a package already decided resumes its (the file's, long gone) wait at once: nothing waits
    assert "ignored" in pw.load_handler("approval").handler(request, None)
    world.sfn.stop_execution(executionArn=arn)


def test_event_files_replay_through_their_handlers(world: pw.PipelineWorld) -> None:
    pw.upload_dataset(world.s3)
    answers = {}
    for name, folder in HAPPY_PATH:
        event = _load(name)
        if name == "validate.json":
            event["event"] = _as_uploaded_here(event["event"], world.s3)
        answers[name] = pw.load_handler(folder).handler(event, None)
    assert answers["validate.json"]["run_id"] == _load("start_tuning.json")["run"]["run_id"]
    # the replayed extraction made the feature set the file's run tuned on (the same content key)
    assert answers["prepare_features_collect.json"]["ready"]
    tuned_on = _load("start_tuning.json")["features"]["feature_set"]
    assert answers["prepare_features_start.json"]["feature_set"] == tuned_on
    assert answers["describe_job_tuning.json"]["done"] and answers["describe_job_endpoint.json"]["done"]
    assert answers["quality_gate.json"]["passed"]
    assert answers["deploy.json"]["action"] == "create"
    assert world.sagemaker.describe_endpoint(EndpointName=pw.ENDPOINT)["EndpointStatus"] == "InService"
    assert "succeeded" in answers["notify_succeeded.json"]["subject"]
    # the failure path: nothing of a later run is running, cleanup finds nothing to undo and says so
    assert pw.load_handler("cleanup").handler(_load("cleanup.json"), None)["actions"] == []
    assert "failed" in pw.load_handler("notify").handler(_load("notify_failed.json"), None)["subject"]
    # the redeploy of the version the replayed gate registered plans a run of its own on that model
    [(name, folder)] = REDEPLOY_PATH
    planned = pw.load_handler(folder).handler(_load(name), None)
    assert planned["run"]["redeploy"]["model_package_arn"] == answers["quality_gate.json"]["model_package_arn"]
    assert planned["gate"]["model_data_url"] == answers["quality_gate.json"]["model_data_url"]


def test_report_event_replays_after_its_execution(world: pw.PipelineWorld) -> None:
    [(name, folder)] = AFTER_ITS_EXECUTION
    event = _load(name)
    execution = world.run(pw.upload_dataset(world.s3), event["execution_arn"].rsplit(":", 1)[1])
    assert execution["executionArn"] == event["execution_arn"] and execution["status"] == "SUCCEEDED"
    answer = pw.load_handler(folder).handler(event, None)
    assert answer["report_s3_uri"].startswith(f"s3://{pw.BUCKET}/reports/")
    assert answer["cost_line"]


def test_start_execution_input_runs_the_state_machine(world: pw.PipelineWorld) -> None:
    assert _load("start_execution.json") == _load("s3_manifest_created.json")  # the same input shape
    key = pw.upload_dataset(world.s3)
    event = _as_uploaded_here(_load("start_execution.json"), world.s3)
    assert event["detail"]["object"]["key"] == key and event["detail"]["bucket"]["name"] == pw.BUCKET
    execution = world.run(key, "from-events-file", event=event)
    assert execution["status"] == "SUCCEEDED", execution


def test_redeploy_execution_input_runs_the_state_machine(world: pw.PipelineWorld) -> None:
    """events/redeploy_execution.json names version 1 of the group: the first run registers it."""
    first = world.run(pw.upload_dataset(world.s3), "first")
    assert first["status"] == "SUCCEEDED", first
    event = _load("redeploy_execution.json")
    assert event["redeploy"]["model_package_arn"] == json.loads(first["output"])["gate"]["model_package_arn"]
    execution = world.run("", "redeploy-from-events-file", event=event)
    assert execution["status"] == "SUCCEEDED", execution
    assert "Deploy" in world.states_entered(execution["executionArn"])


def test_event_files_carry_the_current_defaults() -> None:
    """events/validate.json holds the settings the state machine passes today (regenerate with
    tests/pipeline/generate_events.py after changing template defaults or the ASL)."""
    definition = json.loads(pw.substitute(pw.ASL_PATH.read_text(), pw.resolve_substitutions(poll_seconds=0)))
    defaults = definition["States"]["ApplyDefaults"]["Parameters"]["defaults"]
    assert _load("validate.json")["defaults"] == defaults == _load("redeploy.json")["defaults"]
