"""`imgclf aws watch [--stack NAME] [EXECUTION]`: follow a pipeline run live until it ends.

Every `interval` seconds it reads the execution (status, history) and the SageMaker resource the run is
busy with, and prints a line when something changed:

- the state the execution is in (the last state entered, from GetExecutionHistory);
- the feature extraction (frozen backbones): the extraction job's status (DescribeTrainingJob), or that an
  existing feature set is reused;
- tuning: trials done and running out of the budget, the best objective so far
  (DescribeHyperParameterTuningJob);
- the final training: status, epoch and the latest metrics, read from the job's log in CloudWatch Logs
  with the regexes SageMaker itself applies (imgclf.contract), then FinalMetricDataList when it ends;
- the endpoint: status and the rollout phase of its variants (DescribeEndpoint's VariantStatus);
- a manual approval (ApprovalMode=manual): the model package that waits, and the command that approves it.

The job names come from the execution's own data (the run Validate planned, the states' results). It
ends with the outcome, the execution's console link, and an exit code: 0 when a new model is live, 3
when the run ended without deploying (quality gate, duplicate dataset version), 1 when it failed.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from botocore.exceptions import ClientError
from mlpipeline import approval

from imgclf_cli.errors import CliError, ExitCode
from imgclf_cli.phases import describe_endpoint, describe_extraction, describe_training, describe_tuning

DEFAULT_INTERVAL_S = 15.0
# The state in which a run waits for a person (ApprovalMode=manual; statemachine/pipeline.asl.json).
APPROVAL_STATE = "WaitForApproval"
# Succeed states of statemachine/pipeline.asl.json that end a run without a new live model.
NOT_DEPLOYED_STATES = {
    "ModelRejected": "the model was rejected; the live endpoint is unchanged",
    "DuplicateIgnored": "this dataset version already ran; nothing was trained",
}
# Where SageMaker writes a training job's log: /aws/sagemaker/TrainingJobs, one stream per instance named
# <job name>/algo-<n>-<epoch seconds> (https://docs.aws.amazon.com/sagemaker/latest/dg/logging-cloudwatch.html).
TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"


def resolve_execution(sfn: Any, execution: str | None, state_machine_arn: str | None) -> str:
    """An execution ARN from an ARN, a name (with the stack's state machine), or the latest execution."""
    if execution and execution.startswith("arn:"):
        return execution
    if state_machine_arn is None:
        raise CliError("give an execution ARN, or --stack to find the execution by name or the latest one",
                       ExitCode.BAD_INPUT)
    if execution:
        # arn:<partition>:states:<region>:<account>:stateMachine:<name> -> ...:execution:<name>:<execution>
        prefix, _, machine = state_machine_arn.rpartition(":stateMachine:")
        return f"{prefix}:execution:{machine}:{execution}"
    latest = sfn.list_executions(stateMachineArn=state_machine_arn, maxResults=1)["executions"]
    if not latest:
        raise CliError(f"{state_machine_arn} has no executions yet: upload a dataset first", ExitCode.BAD_INPUT)
    return str(latest[0]["executionArn"])


@dataclass
class _History:
    """The execution's events, read incrementally: history events never change once written, so each
    look fetches newest first (reverseOrder) only down to the last event already known."""

    sfn: Any
    arn: str
    events: list[dict[str, Any]] = field(default_factory=list)

    def refresh(self) -> list[dict[str, Any]]:
        known = self.events[-1]["id"] if self.events else 0
        new: list[dict[str, Any]] = []
        pages = self.sfn.get_paginator("get_execution_history").paginate(
            executionArn=self.arn, reverseOrder=True, includeExecutionData=True)
        for page in pages:
            new += [event for event in page["events"] if event["id"] > known]
            if any(event["id"] <= known for event in page["events"]):
                break
        self.events += sorted(new, key=lambda event: event["id"])
        return self.events


def current_state(events: list[dict[str, Any]]) -> str | None:
    entered = [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]
    return entered[-1] if entered else None


def state_data(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The execution's data as the last completed state left it (the run, the jobs' results, ...)."""
    for event in reversed(events):
        output = (event.get("stateExitedEventDetails") or {}).get("output")
        if output:
            try:
                document = json.loads(output)
            except ValueError:
                continue
            if isinstance(document, dict):
                return document
    return {}


# --------------------------------------------------------------------------------------------------
# Reading AWS.


@dataclass
class _TrainingLog:
    """The training job's log so far, read incrementally (logs:FilterLogEvents)."""

    logs: Any
    job_name: str
    text: str = ""
    _seen: set[str] = field(default_factory=set)
    _start_ms: int = 0

    def refresh(self) -> str:
        kwargs: dict[str, Any] = {"logGroupName": TRAINING_LOG_GROUP, "logStreamNamePrefix": f"{self.job_name}/",
                                  "startTime": self._start_ms}
        lines: list[tuple[int, str]] = []
        try:
            while True:
                page = self.logs.filter_log_events(**kwargs)
                for event in page.get("events", []):
                    # startTime is inclusive: the last millisecond's events come again, so skip what was read.
                    seen_key = f"{event.get('logStreamName')}/{event['eventId']}"
                    if seen_key not in self._seen:
                        self._seen.add(seen_key)
                        lines.append((int(event["timestamp"]), event["message"]))
                if not page.get("nextToken"):
                    break
                kwargs["nextToken"] = page["nextToken"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise  # no log group yet: the job has not started writing
        for timestamp, message in sorted(lines):
            self.text += message if message.endswith("\n") else message + "\n"
            self._start_ms = max(self._start_ms, timestamp)
        return self.text


def _phase(data: dict[str, Any]) -> str | None:
    """Which SageMaker resource the run is busy with: the latest phase whose result is in the data."""
    for phase in ("deployment", "training", "tuning", "features"):
        if isinstance(data.get(phase), dict):
            return phase
    return None


def _names(data: dict[str, Any], endpoint_name: str | None) -> dict[str, Any]:
    run = data.get("run") if isinstance(data.get("run"), dict) else {}
    training = data.get("training") if isinstance(data.get("training"), dict) else {}
    deployment = data.get("deployment") if isinstance(data.get("deployment"), dict) else {}
    features = data.get("features") if isinstance(data.get("features"), dict) else {}
    return {"features": features.get("job_name"),
            "features_reused": features.get("feature_set") if features.get("reused") else None,
            "tuning": run.get("tuning_job_name"),
            "training": training.get("job_name") or run.get("training_job_name"),
            "deployment": deployment.get("endpoint_name") or endpoint_name}


def console_url(arn: str) -> str:
    region = arn.split(":")[3]
    return f"https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{arn}"


def describe_approval_wait(data: dict[str, Any]) -> str:
    """The package a manual approval waits for, and how to approve it (the notification has both commands)."""
    gate = data.get("gate") if isinstance(data.get("gate"), dict) else {}
    run = data.get("run") if isinstance(data.get("run"), dict) else {}
    arn = gate.get("model_package_arn")
    if not arn:
        return "waiting for a manual approval"
    command = approval.cli_commands(arn, str(run.get("region")))[approval.APPROVED]
    return f"waiting for your decision; to approve: {command}"


def _stamp() -> str:
    return datetime.now().strftime("%H:%M:%S")


def follow(session: Any, arn: str, *, endpoint_name: str | None = None, interval_s: float = DEFAULT_INTERVAL_S,
           timeout_s: float | None = None, out: IO[str] | None = None,
           sleep: Callable[[float], None] = time.sleep) -> ExitCode:
    out = out or sys.stdout
    sfn, sagemaker, logs = session.client("stepfunctions"), session.client("sagemaker"), session.client("logs")
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    training_log: _TrainingLog | None = None
    history = _History(sfn, arn)
    last_line = ""
    out.write(f"following {arn}\n")
    while True:
        execution = sfn.describe_execution(executionArn=arn)
        events = history.refresh()
        data = state_data(events)
        state = current_state(events) or "(starting)"
        phase, names = _phase(data), _names(data, endpoint_name)
        detail = ""
        try:
            if phase == "tuning" and names["tuning"]:
                detail = describe_tuning(sagemaker.describe_hyper_parameter_tuning_job(
                    HyperParameterTuningJobName=names["tuning"]))
            elif phase == "training" and names["training"]:
                if training_log is None or training_log.job_name != names["training"]:
                    training_log = _TrainingLog(logs, str(names["training"]))
                detail = describe_training(sagemaker.describe_training_job(TrainingJobName=names["training"]),
                                           training_log.refresh())
            elif phase == "features" and names["features"]:
                detail = describe_extraction(sagemaker.describe_training_job(TrainingJobName=names["features"]))
            elif phase == "features" and names["features_reused"]:
                detail = f"feature set {names['features_reused']} reused: no extraction job"
            elif phase == "deployment" and names["deployment"]:
                detail = describe_endpoint(sagemaker.describe_endpoint(EndpointName=names["deployment"]))
        except ClientError as error:  # e.g. a job not visible yet: say so, and look again next time
            detail = f"({error.response.get('Error', {}).get('Message', error)})"
        if state == APPROVAL_STATE:
            detail = describe_approval_wait(data)
        line = f"{state}" + (f" | {detail}" if detail else "")
        if line != last_line:
            out.write(f"{_stamp()}  {line}\n")
            out.flush()
            last_line = line
        if execution["status"] != "RUNNING":
            return _outcome(execution, current_state(events), data, out)
        if deadline is not None and time.monotonic() >= deadline:
            out.write(f"still running after {timeout_s:g} s: {console_url(arn)}\n")
            return ExitCode.TIMED_OUT
        sleep(interval_s)


def _outcome(execution: dict[str, Any], final_state: str | None, data: dict[str, Any], out: IO[str]) -> ExitCode:
    arn, status = execution["executionArn"], execution["status"]
    gate = data.get("gate") if isinstance(data.get("gate"), dict) else {}
    if status == "SUCCEEDED" and final_state in NOT_DEPLOYED_STATES:
        # a manual rejection (or expiry) says why; else the gate does
        decided = data.get("approval") if isinstance(data.get("approval"), dict) else {}
        why = decided.get("reason") or gate.get("reason")
        reason = f": {why}" if why else ""
        out.write(f"ended without deploying ({final_state}): {NOT_DEPLOYED_STATES[final_state]}{reason}\n")
        code = ExitCode.NOT_DEPLOYED
    elif status == "SUCCEEDED":
        deployment = data.get("deployment") if isinstance(data.get("deployment"), dict) else {}
        accuracy = f", test accuracy {gate['test_accuracy']:.4f}" if isinstance(gate.get("test_accuracy"),
                                                                                  int | float) else ""
        out.write(f"succeeded: the new model is live on endpoint {deployment.get('endpoint_name', '?')}{accuracy}\n")
        code = ExitCode.OK
    else:
        error, cause = execution.get("error"), execution.get("cause")
        out.write(f"{status.lower()}" + (f": {error}" if error else "") + (f": {cause}" if cause else "") + "\n")
        code = ExitCode.FAILED
    report = data.get("report") if isinstance(data.get("report"), dict) else {}
    if isinstance(report.get("url"), str):
        out.write(f"report: {report['url']}\n")
    out.write(f"details: {console_url(arn)}\n")
    return code
