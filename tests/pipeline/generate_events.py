"""Regenerate events/ (except the inference Lambda's) from real runs in the moto world:

    .venv/bin/python tests/pipeline/generate_events.py

Each function's file is the input it received in a real execution of the ASL (happy path, plus one
failed run for cleanup/notify-failure), so `sam local invoke -e events/<file>` and the tests use inputs
of exactly the shape the state machine sends. test_events.py feeds every file to its handler.
"""

from __future__ import annotations

import json
import os
import sys

import pipeline_world as pw  # beside this script, whose folder Python puts first on sys.path
import pytest
from moto import mock_aws

EVENTS = pw.REPO / "events"


def _env(mp: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": pw.REGION,
        "AWS_REGION": pw.REGION,
        **pw.lambda_environment(),
    }.items():
        mp.setenv(name, value)


def capture(sim_settings: dict, name: str, redeploy_name: str | None = None) -> tuple[list[tuple[str, dict]], dict]:
    """The inputs each function got in one execution, and the execution's own input: the S3 event of the
    manifest upload, carrying the version-id S3 gave the put (the bucket is versioned, as DataBucket).
    With `redeploy_name`, then a redeploy by hand of the model package version the run registered: its
    functions' inputs follow the run's, under the key "redeploy" of the answer's input."""
    invocations: list[tuple[str, dict]] = []
    with pytest.MonkeyPatch.context() as mp, mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        _env(mp)
        sim = pw.SageMakerSim(**sim_settings)
        sim.install(mp)
        pw.install_inprocess_lambdas(mp, invocations)
        world = pw.PipelineWorld(sim, invocations)
        mp.setenv("NOTIFICATION_TOPIC_ARN", world.topic_arn)
        execution = world.run(pw.upload_dataset(world.s3), name)
        trigger = json.loads(execution["input"])
        if redeploy_name is not None:
            package = json.loads(execution["output"])["gate"]["model_package_arn"]
            again = world.run("", redeploy_name, event={"redeploy": {"model_package_arn": package}})
            assert again["status"] == "SUCCEEDED", again
            trigger["redeploy"] = json.loads(again["input"])
    return invocations, trigger


def capture_approval(name: str, timeout_hours: float | None) -> tuple[list[tuple[str, dict]], dict | None]:
    """A run with ApprovalMode=manual: the approval function's inputs (the wait's request; with a short
    `timeout_hours`, the expiry) and, without one, the registry's event of a person approving the package
    (the run then deploys)."""
    invocations: list[tuple[str, dict]] = []
    overrides: dict = {"approval_mode": "manual"}
    if timeout_hours is not None:
        overrides["approval_timeout_hours"] = timeout_hours
    with pytest.MonkeyPatch.context() as mp, mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        _env(mp)
        sim = pw.SageMakerSim()
        sim.install(mp)
        pw.install_inprocess_lambdas(mp, invocations)
        world = pw.PipelineWorld(sim, invocations)
        mp.setenv("NOTIFICATION_TOPIC_ARN", world.topic_arn)
        arn = world.start(pw.upload_dataset(world.s3, manifest={"version": name, "overrides": overrides}), name)
        package = world.waiting_for_approval(arn)
        decided = None
        if timeout_hours is None:
            world.sagemaker.update_model_package(ModelPackageArn=package, ModelApprovalStatus="Approved",
                                                 ApprovalDescription="looked at the report: ship it")
            decided = pw.model_package_event(world.sagemaker.describe_model_package(ModelPackageName=package))
            pw.deliver_event("approval", decided)
        execution = world.ended(arn)
        assert execution["status"] == "SUCCEEDED", execution
    return invocations, decided


def main() -> int:
    happy, trigger = capture({}, "events-happy", redeploy_name="events-redeploy")
    files: dict[str, dict] = {"redeploy_execution.json": trigger.pop("redeploy")}
    files.update({"s3_manifest_created.json": trigger, "start_execution.json": trigger})
    describe_names = {
        "tuning": "describe_job_tuning.json",
        "training": "describe_job_training.json",
        "extraction": "describe_job_extraction.json",
        "endpoint": "describe_job_endpoint.json",
    }
    for function, payload in happy:
        if function == "describe_job":
            files.setdefault(describe_names[payload["kind"]], payload)
        elif function == "notify":
            files.setdefault(f"notify_{payload['outcome']}.json", payload)
        elif function == "prepare_features":
            files.setdefault(f"prepare_features_{payload['phase']}.json", payload)
        else:
            files.setdefault(f"{function}.json", payload)
    failed, _ = capture({"tuning_outcome": "Failed"}, "events-failed")
    for function, payload in failed:
        if function == "cleanup":
            files["cleanup.json"] = payload
        elif function == "notify":
            files.setdefault(f"notify_{payload['outcome']}.json", payload)
    approved, decided = capture_approval("events-approval", None)
    files["approval_decided.json"] = decided
    for function, payload in approved:
        if function == "approval":
            files.setdefault(f"approval_{payload['action']}.json", payload)
    expired, _ = capture_approval("events-approval-expired", 0.0005)  # 1.8 s: the wait expires
    for function, payload in expired:
        if function == "approval" and payload.get("action") == "expire":
            files["approval_expire.json"] = payload
    for name, payload in sorted(files.items()):
        (EVENTS / name).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(files)} files to {os.path.relpath(EVENTS)}: {sorted(files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
