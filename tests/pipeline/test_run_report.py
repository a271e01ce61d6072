"""The run report on AWS: a simulated run (moto + SageMakerSim, the real handlers and ASL) ends with the
report and its cost under reports/<run id>/ in the data bucket and in the notification."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pipeline_world as pw
import pytest
from moto.s3.models import s3_backends

FINAL_JOB = pw.REPO / "tests" / "monitoring" / "fixtures" / "final-job"  # recorded from train.py


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _leave_outputs(job: Any) -> None:
    """What SageMaker uploads when a training job ends: <S3OutputPath>/<job>/output/{model,output}.tar.gz
    (https://docs.aws.amazon.com/sagemaker/latest/dg/model-output.html), here the recorded job's files."""
    data = FINAL_JOB / "output" / "data"
    bucket = pw.BUCKET
    prefix = job.output_data_config["S3OutputPath"].removeprefix(f"s3://{bucket}/").rstrip("/")
    backend = s3_backends[pw.ACCOUNT]["aws"]
    backend.put_object(bucket, f"{prefix}/{job.training_job_name}/output/output.tar.gz",
                       _tar({p.name: p.read_bytes() for p in data.iterdir()}))
    # model.tar.gz: metadata.json after a large member, as SageMaker tars the model folder in no set order
    backend.put_object(bucket, f"{prefix}/{job.training_job_name}/output/model.tar.gz",
                       _tar({"model.pt": b"\0" * 200_000,
                             "metadata.json": (FINAL_JOB / "model" / "metadata.json").read_bytes()}))


@pytest.fixture
def reporting_world(world: pw.PipelineWorld) -> pw.PipelineWorld:
    world.sim.on_training_end = _leave_outputs
    return world


def test_a_run_ends_with_its_report_and_cost_in_s3_and_the_notification(reporting_world: pw.PipelineWorld,
                                                                        tmp_path: Path):
    world = reporting_world
    execution = world.run(pw.upload_dataset(world.s3), "reported")
    assert execution["status"] == "SUCCEEDED", execution
    out = json.loads(execution["output"])
    report = out["report"]
    run = out["run"]
    assert report["report_s3_uri"] == f"s3://{pw.BUCKET}/reports/{run['run_id']}/index.html"
    page = world.s3.get_object(Bucket=pw.BUCKET, Key=f"reports/{run['run_id']}/index.html")
    assert page["ContentType"].startswith("text/html")
    html = page["Body"].read().decode()
    assert html.count('src="data:image/png;base64,') == 3  # curves, trials, confusion (no sample requests)
    for trial in world.sim.trials:
        assert f"{run['tuning_job_name']}-{trial[0]}" in html  # every trial of the tuning job
    # cost: 3 trials (600 + 120 billed + 590 s) and the final job (1200 s) on ml.g4dn.xlarge at the table's
    # 0.7364/h = 0.1227 + 0.0245 + 0.1207 + 0.2455 = 0.5134, plus the endpoint while it was created and
    # the orchestration (both tiny here: the world's polls take milliseconds)
    cost = json.loads(world.s3.get_object(Bucket=pw.BUCKET, Key=f"reports/{run['run_id']}/cost.json")["Body"].read())
    jobs = [i for i in cost["items"] if i["item"] in ("tuning trial", "training")]
    assert [i["usd"] for i in jobs] == pytest.approx([0.1227, 0.0245, 0.1207, 0.2455], abs=1e-4)
    assert cost["spot_savings_usd"] == pytest.approx(180 / 3600 * 0.7364, abs=1e-4)
    assert cost["total_usd"] == pytest.approx(0.5134, abs=2e-3)
    assert cost["price_source"].startswith("AWS Price List API")  # the role may call it
    assert cost["endpoint_monthly"]["usd"] == pytest.approx(0.115 * 730)  # 1 x ml.m5.large
    assert any(i["item"] == "Step Functions state transitions" and int(i["name"]) > 20 for i in cost["items"])
    # the notification carries the cost line and a presigned link to the page
    [message] = world.notifications()
    assert cost["line"] in message and "$83.95 a month" in message
    link = report["report_url"]
    assert link in message
    query = parse_qs(urlsplit(link).query)
    assert urlsplit(link).path == f"/reports/{run['run_id']}/index.html"
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["604800"]


def test_a_failed_run_still_reports(reporting_world: pw.PipelineWorld):
    world = reporting_world
    world.sim.tuning_outcome = "Failed"
    execution = world.run(pw.upload_dataset(world.s3), "failed-reported")
    assert execution["status"] == "FAILED"
    states = world.states_entered(execution["executionArn"])
    assert states[-4:] == ["Cleanup", "ReportFailure", "NotifyFailure", "PipelineFailed"]
    [message] = world.notifications()
    assert "Run report: https://" in message and "Run cost: $" in message
