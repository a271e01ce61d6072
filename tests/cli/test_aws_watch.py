"""`imgclf aws watch` against moto executions of the real ASL with the real handlers (the pipeline tests'
world): every phase shown live, the outcome and its exit code."""

from __future__ import annotations

import io
import json
import re
import time

import boto3
import pytest
from cli_world import STACK, pw

from imgclf import contract
from imgclf_cli import phases, watch
from imgclf_cli.errors import ExitCode
from imgclf_cli.main import main


def _watched_machine(world) -> str:
    """The same ASL and substitutions as the world's state machine, polling every second instead of
    never waiting, so that a watcher sees each phase before the next."""
    definition = pw.substitute(pw.ASL_PATH.read_text(), pw.resolve_substitutions(poll_seconds=1))
    role = boto3.client("iam", region_name=pw.REGION).get_role(RoleName="pipeline-lambda")["Role"]["Arn"]
    return world.sfn.create_state_machine(name="imgclf-pipeline-watched", definition=definition,
                                          roleArn=role)["stateMachineArn"]


def _start(world, machine: str | None = None, name: str = "run-1") -> str:
    key = pw.upload_dataset(world.s3)
    return world.sfn.start_execution(stateMachineArn=machine or world.state_machine_arn, name=name,
                                     input=json.dumps(pw.s3_event(key)))["executionArn"]


def _training_log_lines(epochs: int) -> list[str]:
    """What train.py prints per epoch (imgclf.contract's formats, which SageMaker's regexes read)."""
    lines = []
    for epoch in range(1, epochs + 1):
        lines += [f"epoch {epoch}/10",
                  contract.format_split_line("Train", 1.0 / epoch, 0.5 + 0.1 * epoch, 5, 10),
                  contract.format_split_line("Valid", 0.9 / epoch, 0.6 + 0.1 * epoch, 6, 10),
                  contract.format_split_line("Test", 0.8 / epoch, 0.6 + 0.1 * epoch, 6, 10),
                  contract.format_epoch_timing_line(12.5, 80.0)]
    return lines


def _write_training_log(job_name: str, lines: list[str]) -> None:
    """The job's log as SageMaker writes it: group /aws/sagemaker/TrainingJobs, one stream per instance
    named <job>/algo-<n>-<epoch seconds> (https://docs.aws.amazon.com/sagemaker/latest/dg/logging-cloudwatch.html)."""
    logs = boto3.client("logs", region_name=pw.REGION)
    if not logs.describe_log_groups(logGroupNamePrefix=watch.TRAINING_LOG_GROUP)["logGroups"]:
        logs.create_log_group(logGroupName=watch.TRAINING_LOG_GROUP)
    stream = f"{job_name}/algo-1-1796000000"
    logs.create_log_stream(logGroupName=watch.TRAINING_LOG_GROUP, logStreamName=stream)
    now = int(time.time() * 1000)
    logs.put_log_events(logGroupName=watch.TRAINING_LOG_GROUP, logStreamName=stream,
                        logEvents=[{"timestamp": now + i, "message": line} for i, line in enumerate(lines)])


def test_every_phase_is_shown_live_until_the_model_is_live(world, sim):
    arn = _start(world, _watched_machine(world))
    # Each SageMaker job runs until the watcher has shown it, then ends as SageMakerSim says.
    shown: set[str] = set()
    # (the extraction job is a training job named ...-features: its own phase, shown before tuning)
    sim._tick = lambda key, polls=None: ("extraction" if key.endswith("-features") else key.split(":")[0]) in shown
    out = io.StringIO()
    log_written: list[str] = []

    def between_looks(seconds: float) -> None:
        text = out.getvalue()
        if "| extraction " in text:
            shown.add("extraction")
        if "| tuning " in text:
            shown.add("tuning")
        training = re.search(r"\| training (\S+): InProgress", text)
        if training and not log_written:
            _write_training_log(training.group(1), _training_log_lines(2))
            log_written.append(training.group(1))
        if "epoch 2/" in text:
            shown.add("training")
        if "| endpoint " in text:
            shown.add("endpoint")
        time.sleep(0.05)

    code = watch.follow(boto3.session.Session(region_name=pw.REGION), arn, interval_s=0.05, timeout_s=60,
                        out=out, sleep=between_looks)
    text = out.getvalue()
    assert code == ExitCode.OK, text
    epochs = pw.parameter_defaults()["Epochs"]
    tuning = pw.parameter_defaults()["MaxTuningJobs"]
    assert re.search(r"\| extraction imgclf-dogimages-\w+-features: InProgress", text), text
    assert re.search(rf"\| tuning imgclf-dogimages-\w+: InProgress, \d+/{tuning} trials done, \d+ running", text), text
    assert re.search(r"\| tuning imgclf-dogimages-\w+: Completed, .*, best average test loss 0\.4200 so far",
                     text), text
    assert re.search(rf"\| training imgclf-dogimages-\w+-final: InProgress \(\w+\), epoch 2/{epochs}, "
                     r"valid loss 0\.4500, valid accuracy 0\.8000, average test loss 0\.4000, test accuracy 0\.8000",
                     text), text
    assert re.search(r"\| endpoint imgclf-classifier: Creating", text), text
    assert re.search(r"^\d\d:\d\d:\d\d  Succeeded", text, re.MULTILINE), text
    assert "succeeded: the new model is live on endpoint imgclf-classifier, test accuracy 0.9100" in text
    console = "https://us-east-1.console.aws.amazon.com/states/home?region=us-east-1#/v2/executions/details/"
    assert f"details: {console}{arn}" in text
    assert shown == {"extraction", "tuning", "training", "endpoint"}


def test_the_stacks_latest_run_rejected_by_the_gate_exits_3(world, sim, stack, capsys):
    sim.test_accuracy = 0.2  # under the default quality threshold
    _start(world)
    assert main(["aws", "watch", "--stack", STACK, "--interval", "0.05", "--timeout", "60"]) == ExitCode.NOT_DEPLOYED
    out = capsys.readouterr().out
    assert "ended without deploying (ModelRejected): the model was rejected" in out
    assert "0.2" in out  # the gate's reason names the accuracy


def test_a_manual_approval_wait_shows_the_command_and_a_rejection_says_who():
    arn = f"arn:aws:sagemaker:{pw.REGION}:{pw.ACCOUNT}:model-package/imgclf-models/3"
    data = {"run": {"region": pw.REGION}, "gate": {"model_package_arn": arn, "reason": "0.91 >= 0.7"}}
    assert watch.describe_approval_wait(data) == (
        f"waiting for your decision; to approve: aws sagemaker update-model-package --region {pw.REGION} "
        f'--model-package-arn {arn} --model-approval-status Approved --approval-description "why"')
    out = io.StringIO()
    rejected = {**data, "approval": {"status": "Rejected", "reason": "rejected in the model registry: blurry"}}
    execution = {"executionArn": f"arn:aws:states:{pw.REGION}:{pw.ACCOUNT}:execution:m:e", "status": "SUCCEEDED"}
    assert watch._outcome(execution, "ModelRejected", rejected, out) == ExitCode.NOT_DEPLOYED
    assert "(ModelRejected): the model was rejected; the live endpoint is unchanged: rejected in the model " \
           "registry: blurry" in out.getvalue()


def test_a_failed_run_by_name_exits_1(world, sim, stack, capsys):
    sim.training_outcome = "Failed"
    _start(world, name="run-failing")
    assert main(["aws", "watch", "--stack", STACK, "run-failing", "--interval", "0.05",
                 "--timeout", "60"]) == ExitCode.FAILED
    out = capsys.readouterr().out
    assert re.search(r"^failed: \S+", out, re.MULTILINE), out
    assert "details: https://" in out


def test_a_run_that_outlasts_the_timeout_exits_5(world, sim, capsys):
    sim._tick = lambda key, polls=None: False  # the tuning job never ends
    arn = _start(world, _watched_machine(world))
    assert main(["aws", "watch", arn, "--interval", "0.1", "--timeout", "1", "--region", pw.REGION]) == \
        ExitCode.TIMED_OUT
    assert "still running after 1 s" in capsys.readouterr().out


def test_the_run_ends_only_in_the_succeed_states_watch_knows():
    states = json.loads(pw.ASL_PATH.read_text())["States"]
    succeed = {name for name, state in states.items() if state["Type"] == "Succeed"}
    assert succeed == {"Succeeded", *watch.NOT_DEPLOYED_STATES}


def test_a_blue_green_rollout_phase_is_shown():
    # DescribeEndpoint during UpdateEndpoint: the new fleet's variants under PendingDeploymentSummary,
    # each with VariantStatus (Creating | Updating | Deleting | ActivatingTraffic | Baking).
    description = {
        "EndpointName": "imgclf-classifier", "EndpointStatus": "Updating",
        "ProductionVariants": [{"VariantName": "AllTraffic", "CurrentInstanceCount": 2, "DesiredInstanceCount": 2}],
        "PendingDeploymentSummary": {"EndpointConfigName": "imgclf-new", "ProductionVariants": [
            {"VariantName": "AllTraffic", "CurrentInstanceCount": 1, "DesiredInstanceCount": 2,
             "VariantStatus": [{"Status": "Baking", "StatusMessage": "baking for 600 s"}]}]},
    }
    expected = "endpoint imgclf-classifier: Updating, rollout Baking, instances 1/2"
    assert phases.describe_endpoint(description) == expected


def test_tuning_shows_the_best_objective_so_far():
    description = {
        "HyperParameterTuningJobName": "imgclf-dogimages-0123456789", "HyperParameterTuningJobStatus": "InProgress",
        "HyperParameterTuningJobConfig": {"ResourceLimits": {"MaxNumberOfTrainingJobs": 8}},
        "TrainingJobStatusCounters": {"Completed": 3, "InProgress": 2, "RetryableError": 0, "NonRetryableError": 1},
        "BestTrainingJob": {"FinalHyperParameterTuningJobObjectiveMetric": {
            "MetricName": contract.OBJECTIVE_METRIC_NAME, "Value": 0.4213}},
    }
    assert phases.describe_tuning(description) == (
        "tuning imgclf-dogimages-0123456789: InProgress, 3/8 trials done, 2 running, 1 failed, "
        "best average test loss 0.4213 so far")


@pytest.mark.parametrize("execution", [None, "run-1"])
def test_an_execution_needs_an_arn_or_the_stack(execution, capsys):
    assert main(["aws", "watch", *([execution] if execution else []), "--region", pw.REGION]) == ExitCode.BAD_INPUT
    assert "give an execution ARN" in capsys.readouterr().err


def test_the_history_is_read_incrementally_and_in_order(world):
    arn = _start(world)
    history = watch._History(world.sfn, arn)
    first = list(history.refresh())
    while world.sfn.describe_execution(executionArn=arn)["status"] == "RUNNING":
        time.sleep(0.05)
    events = history.refresh()
    assert events[: len(first)] == first  # what was read stays; only newer events are added
    full = world.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    assert [e["id"] for e in events] == [e["id"] for e in full] == sorted(e["id"] for e in full)
    assert history.refresh() == events
