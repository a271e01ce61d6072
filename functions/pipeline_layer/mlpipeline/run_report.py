"""The AWS run's report: gather what the run's jobs left (SageMaker descriptions, the final job's
output.tar.gz and model.tar.gz in S3, the execution history), build the same report as local mode
(imgclf.report) and its cost (mlpipeline.costs), and put both under the run's prefix in the data bucket.
What a failed run never created reads as None (aws.describe_or_none), so its report still renders.

Only ReportFunction imports this module: imgclf.report needs matplotlib, which that function packages on its
own (functions/report/requirements.txt) and the thin pipeline functions do not.
"""

from __future__ import annotations

import base64
import json
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from imgclf import report, tar_stream
from mlpipeline import aws, costs

REPORT_PREFIX = "reports"
# SigV4 presigned URLs live at most 7 days; one signed with a role's temporary credentials stops working when
# that session ends, whatever it asked (https://docs.aws.amazon.com/AmazonS3/latest/userguide/using-presigned-url.html).
REPORT_LINK_SECONDS = 7 * 24 * 3600
OUTPUT_DATA_FILES = ("training-history.json", "evaluation.json", "debugger-report.json", "profiler-report.json")
_TRIAL_STATES = {"Completed": report.COMPLETE, "Stopped": report.PRUNED, "Failed": "FAIL"}


def report_key(run: Mapping[str, Any], name: str = "index.html") -> str:
    return f"{REPORT_PREFIX}/{run['run_id']}/{name}"


def _unquote(value: Any) -> Any:
    text = str(value)
    return text[1:-1] if len(text) > 1 and text[0] == text[-1] == '"' else text


def tuning_trials(sagemaker: Any, tuning_job_name: str) -> list[dict[str, Any]]:
    """Every trial of the tuning job (ListTrainingJobsForHyperParameterTuningJob), as the report's rows."""
    summaries: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"HyperParameterTuningJobName": tuning_job_name, "MaxResults": 100}
    while True:
        page = aws.describe_or_none(sagemaker.list_training_jobs_for_hyper_parameter_tuning_job, **kwargs)
        if page is None:
            return []
        summaries += page.get("TrainingJobSummaries", [])
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    rows = []
    for number, summary in enumerate(sorted(summaries, key=lambda s: s.get("CreationTime") or datetime.min)):
        tuned = summary.get("TunedHyperParameters") or {}
        objective = (summary.get("FinalHyperParameterTuningJobObjectiveMetric") or {}).get("Value")
        state = _TRIAL_STATES.get(summary.get("TrainingJobStatus", ""), "RUNNING")
        rows.append({"trial": number, "job": summary["TrainingJobName"], "state": state,
                     "lr": float(_unquote(tuned["lr"])) if "lr" in tuned else None,
                     "batch-size": _unquote(tuned["batch-size"]) if "batch-size" in tuned else None,
                     "objective": objective if state == report.COMPLETE else None, "last_value": objective})
    return rows


def _tar_members(s3: Any, uri: str, wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """Stream an S3 tar.gz and yield the wanted regular files (no temporary copy of a large model.tar.gz)."""
    bucket, key = aws.s3_location(uri)
    body = aws.describe_or_none(s3.get_object, Bucket=bucket, Key=key)
    if body is not None:
        yield from tar_stream.members(body["Body"], wanted)


def job_outputs(s3: Any, description: Mapping[str, Any], data_dir: Path) -> dict[str, Any] | None:
    """Write the final job's report files (output.tar.gz) into data_dir; return metadata.json (model.tar.gz).
    SageMaker's layout: <S3OutputPath>/<job>/output/{model,output}.tar.gz."""
    data_dir.mkdir(parents=True, exist_ok=True)
    output_path = description["OutputDataConfig"]["S3OutputPath"].rstrip("/")
    job = description["TrainingJobName"]
    for name, content in _tar_members(s3, f"{output_path}/{job}/output/output.tar.gz",
                                      lambda n: n in OUTPUT_DATA_FILES):
        (data_dir / name).write_bytes(content)
    model_uri = (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    if not model_uri:
        return None
    for _name, content in _tar_members(s3, model_uri, lambda n: n == "metadata.json"):
        return json.loads(content)
    return None


# --------------------------------------------------------------------------------------------------
# Usage from the execution history


def _history(sfn: Any, execution_arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
    while True:
        page = sfn.get_execution_history(**kwargs)
        events += page["events"]
        if not page.get("nextToken"):
            return events
        kwargs["nextToken"] = page["nextToken"]


def orchestration_usage(events: list[dict[str, Any]], memory_of: Callable[[str], int]) -> costs.OrchestrationUsage:
    """State transitions (every state entered; Step Functions bills each) and Lambda GB-seconds (from each
    LambdaFunctionStarted to its end; memory from the function's configuration) so far."""
    by_id = {e["id"]: e for e in events}
    transitions = sum(1 for e in events if e["type"].endswith("StateEntered"))
    gb_seconds, requests = 0.0, 0
    for event in events:
        if event["type"] not in ("LambdaFunctionSucceeded", "LambdaFunctionFailed", "LambdaFunctionTimedOut"):
            continue
        started = by_id.get(event.get("previousEventId"))
        scheduled = by_id.get(started.get("previousEventId")) if started else None
        if not started or not scheduled:
            continue
        resource = (scheduled.get("lambdaFunctionScheduledEventDetails") or {}).get("resource", "")
        seconds = (event["timestamp"] - started["timestamp"]).total_seconds()
        gb_seconds += max(0.0, seconds) * memory_of(resource) / 1024
        requests += 1
    return costs.OrchestrationUsage(transitions, gb_seconds, requests)


def rollout_usage(events: list[dict[str, Any]], run: Mapping[str, Any],
                  deployment: Mapping[str, Any] | None) -> costs.EndpointUsage | None:
    """The new fleet's time from Deploy's end to the last endpoint describe (InService, or where the run
    stopped): during an update SageMaker runs it beside the old fleet (blue/green)."""
    if not deployment:
        return None
    exited = [e["timestamp"] for e in events if e["type"] == "TaskStateExited"
              and (e.get("stateExitedEventDetails") or {}).get("name") == "Deploy"]
    described = [e["timestamp"] for e in events if e["type"] == "TaskStateExited"
                 and (e.get("stateExitedEventDetails") or {}).get("name") == "DescribeEndpoint"]
    if not exited or not described:
        return None
    settings = run.get("settings") or {}
    return costs.EndpointUsage(settings.get("endpoint_instance_type", "?"),
                               int(settings.get("endpoint_instance_count") or 1),
                               max(0.0, (described[-1] - exited[0]).total_seconds()),
                               str(deployment.get("action", "create")))


# --------------------------------------------------------------------------------------------------
# The whole report


def prices_for(region: str, wanted: set[tuple[str, str]], pricing: Any | None) -> costs.PriceBook:
    """Price List API prices where the role may call it (pricing given), else the dated table."""
    table = costs.price_table(region)
    if pricing is None:
        return table
    try:
        return costs.price_list_prices(pricing, region, wanted, table)
    except (ClientError, BotoCoreError) as error:
        table.source += f" (the Price List API refused: {type(error).__name__}: {str(error)[:120]})"
        return table


def build(*, outcome: str, state: Mapping[str, Any], execution_arn: str | None, clients: Mapping[str, Any],
          endpoint_name: str, workdir: Path) -> dict[str, Any]:
    """Gather, compute, render. Returns {"cost", "summary", "html"} (the page as one self-contained file)."""
    run = state["run"]
    sagemaker, s3 = clients["sagemaker"], clients["s3"]
    # A redeploy (mlpipeline.redeploy) has no tuning or training job of its own: its cost is the rollout's.
    trials = tuning_trials(sagemaker, run["tuning_job_name"]) if run.get("tuning_job_name") else []
    jobs = [costs.training_job_usage(d, "tuning trial") for d in
            (aws.describe_or_none(sagemaker.describe_training_job, TrainingJobName=t["job"]) for t in trials) if d]
    final = aws.describe_or_none(sagemaker.describe_training_job, TrainingJobName=run["training_job_name"]) \
        if run.get("training_job_name") else None
    data_dir = workdir / "data"
    metadata = None
    if final:
        jobs.append(costs.training_job_usage(final, "training"))
        for rule in final.get("DebugRuleEvaluationStatuses") or []:
            arn = rule.get("RuleEvaluationJobArn")
            if arn:
                processing = aws.describe_or_none(sagemaker.describe_processing_job,
                                                  ProcessingJobName=arn.rsplit("/", 1)[-1])
                if processing:
                    jobs.append(costs.processing_job_usage(processing))
        metadata = job_outputs(s3, final, data_dir)
    events = _history(clients["stepfunctions"], execution_arn) if execution_arn else []
    memory: dict[str, int] = {}

    def memory_of(arn: str) -> int:
        if arn not in memory:
            memory[arn] = int(clients["lambda"].get_function_configuration(FunctionName=arn)["MemorySize"])
        return memory[arn]

    rollout = rollout_usage(events, run, state.get("deployment"))
    orchestration = orchestration_usage(events, memory_of) if events else None
    live = _live_endpoint(sagemaker, endpoint_name)
    wanted = {(j.component, j.instance_type) for j in jobs}
    if rollout:
        wanted.add((costs.HOSTING, rollout.instance_type))
    if live:
        wanted.add((costs.HOSTING, live[0]))
    prices = prices_for(run.get("region", "us-east-1"), wanted, clients.get("pricing"))
    cost = costs.run_cost(jobs, rollout, orchestration, prices)
    if live:
        cost["endpoint_monthly"] = costs.endpoint_monthly(live[0], live[1], prices)
    gate = state.get("gate") or {}
    summary = {"run_id": run["run_id"], "outcome": outcome, "gate": gate,
               "best_hyperparameters": (state.get("tuning") or {}).get("best_hyperparameters")
               or (state.get("tuning_status") or {}).get("best_hyperparameters"),
               "best_objective": (report.best_trial(trials) or {}).get("objective"),
               "metrics": (metadata or {}).get("metrics") or {},
               "model": (final or {}).get("ModelArtifacts", {}).get("S3ModelArtifacts")
               or (run.get("redeploy") or {}).get("model_data_url"),
               "notes": _notes(outcome, state)}
    page = report.write_report(workdir / "report", summary=summary, trials=trials, data_dir=data_dir,
                               metadata=metadata, cost=cost)
    return {"cost": cost, "summary": summary, "html": _inline_images(page), "metadata": metadata}


def _notes(outcome: str, state: Mapping[str, Any]) -> list[str]:
    notes = [f"Execution outcome: {outcome}."]
    redeploy = (state.get("run") or {}).get("redeploy")
    if redeploy:
        notes.append(f"Redeploy of model package {redeploy['model_package_arn']} (trained by run "
                     f"{redeploy.get('trained_by_run')}): no tuning or training in this run.")
    decision = state.get("approval") or {}
    if decision.get("status"):  # ApprovalMode=manual: WaitForApproval's or ExpireApproval's answer
        notes.append(f"Manual approval: {decision['status']} ({decision.get('reason')}).")
    error = state.get("error") or {}
    if error:
        notes.append(f"Error {error.get('Error')}: {str(error.get('Cause'))[:500]}")
    deployment = state.get("deployment") or {}
    if deployment:
        notes.append(f"Deployment: {deployment.get('action')} of endpoint {deployment.get('endpoint_name')}.")
    return notes


def _live_endpoint(sagemaker: Any, endpoint_name: str) -> tuple[str, int] | None:
    """(instance type, current instance count) of the endpoint serving now, or None."""
    endpoint = aws.describe_or_none(sagemaker.describe_endpoint, EndpointName=endpoint_name)
    if not endpoint or endpoint.get("EndpointStatus") not in ("InService", "Updating", "SystemUpdating"):
        return None
    config = aws.describe_or_none(sagemaker.describe_endpoint_config, EndpointConfigName=endpoint["EndpointConfigName"])
    if not config:
        return None
    variant = config["ProductionVariants"][0]
    counts = [v.get("CurrentInstanceCount") for v in endpoint.get("ProductionVariants") or []]
    count = counts[0] if counts and counts[0] is not None else variant.get("InitialInstanceCount", 1)
    return variant.get("InstanceType", "?"), int(count)


def _inline_images(page: Path) -> str:
    """The page with its PNGs as data: URIs: one object, readable offline and through one presigned link
    (a relative image URL would not carry the link's signature)."""
    html = page.read_text()

    def inline(match: re.Match[str]) -> str:
        image = page.parent / match.group(1)
        if not image.exists():
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(image.read_bytes()).decode()}"'

    return re.sub(r'src="([\w.-]+\.png)"', inline, html)


def publish(s3: Any, run: Mapping[str, Any], built: Mapping[str, Any]) -> dict[str, Any]:
    """Put index.html and cost.json under reports/<run id>/ and presign the page."""
    bucket = run["bucket"]
    key = report_key(run)
    s3.put_object(Bucket=bucket, Key=key, Body=built["html"].encode(), ContentType="text/html; charset=utf-8")
    s3.put_object(Bucket=bucket, Key=report_key(run, "cost.json"), Body=json.dumps(built["cost"], default=str),
                  ContentType="application/json")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                    ExpiresIn=REPORT_LINK_SECONDS)
    return {"report_s3_uri": f"s3://{bucket}/{key}", "report_url": url, "cost_line": built["cost"]["line"],
            "total_usd": built["cost"]["total_usd"],
            "endpoint_monthly_usd": (built["cost"].get("endpoint_monthly") or {}).get("usd"),
            "price_source": built["cost"]["price_source"]}


def temporary_workdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="report-")

