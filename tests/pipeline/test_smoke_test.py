"""The post-deploy smoke test (issue 10, item 2): the pure check (imgclf.smoke_check) and its tolerance,
and the real ASL under moto with the real handlers, where SageMakerSim's endpoint answers InvokeEndpoint
from the served model's recorded answers (pipeline_world: SageMakerSim._invoke_answer)."""

from __future__ import annotations

import copy

import boto3
import pipeline_world as pw
import pytest
from mlpipeline.errors import EndpointDeploymentFailed

from imgclf import smoke_check


def _answer(p1: float, p2: float, runtime: str = "torch", labels: tuple[str, str] = ("a", "b")) -> dict:
    return {"predictions": [{"label": labels[0], "class_id": 0, "probability": p1},
                            {"label": labels[1], "class_id": 1, "probability": p2}], "runtime": runtime}


def _sample(*answers: dict, recorded: tuple[str, ...] = ("torch",)) -> dict:
    images = [{"name": f"img{i}", "content_type": "image/jpeg", "image_base64": ""} for i in range(len(answers))]
    return {"schema_version": 1, "top_k": 2, "images": images,
            "precisions": {"torch": "fp32", "onnxruntime-int8": "int8", "openvino-bf16": "bf16"},
            "recordings": {name: {"answers": list(answers)} for name in recorded}}


def test_the_served_runtimes_own_recording_is_compared_tightly() -> None:
    sample = _sample(_answer(0.9, 0.1), recorded=("torch", "onnxruntime-int8"))
    sample["recordings"]["onnxruntime-int8"]["answers"] = [_answer(0.87, 0.13)]
    assert smoke_check.check(sample, [_answer(0.8705, 0.1295, "onnxruntime-int8")]).passed
    report = smoke_check.check(sample, [_answer(0.85, 0.15, "onnxruntime-int8")])
    assert not report.passed and report.reference == "onnxruntime-int8" and report.tolerance == 0.002


def test_an_unrecorded_runtime_is_compared_with_torch_within_its_precisions_tolerance() -> None:
    sample = _sample(_answer(0.9, 0.1))
    assert smoke_check.check(sample, [_answer(0.86, 0.14, "openvino-bf16")]).passed  # 0.04 <= 0.05
    assert not smoke_check.check(sample, [_answer(0.84, 0.16, "openvino-bf16")]).passed  # 0.06 > 0.05
    assert smoke_check.check(sample, [_answer(0.83, 0.17, "onnxruntime-int8")]).passed  # 0.07 <= 0.08
    with pytest.raises(smoke_check.SmokeSampleError, match="never exported"):
        smoke_check.check(sample, [_answer(0.9, 0.1, "tensorrt-fp8")])


def test_a_top1_flip_is_a_mismatch_unless_the_recorded_margin_is_within_tolerance() -> None:
    flipped = _answer(0.9, 0.1, labels=("b", "a"))
    report = smoke_check.check(_sample(_answer(0.9, 0.1)), [flipped])
    assert not report.passed and "top-1 'b'" in report.summary()
    # margin 0.02 < 2 x int8's 0.08: int8 may legitimately swap them; probabilities still match
    close = _sample(_answer(0.51, 0.49))
    assert smoke_check.check(close, [_answer(0.5, 0.5, "onnxruntime-int8", labels=("b", "a"))]).passed
    assert 2 * max(smoke_check.PRECISION_TOLERANCE.values()) == smoke_check.MIN_TOP1_MARGIN


# ---------------------------------------------------------------------------------------------------
# Scenarios.




def test_a_passing_smoke_test_runs_between_the_endpoint_and_autoscaling(world: pw.PipelineWorld) -> None:
    execution = world.run(pw.upload_dataset(world.s3), "smoke-ok")
    assert execution["status"] == "SUCCEEDED", execution
    states = world.states_entered(execution["executionArn"])
    assert states[states.index("SmokeTest") - 1:states.index("SmokeTest") + 2] == [
        "EndpointReady?", "SmokeTest", "ConfigureAutoscaling"]
    out = pw.execution_output(execution)
    assert out["smoke_test"]["passed"] is True and out["smoke_test"]["images"] == 2
    assert out["smoke_test"]["endpoint_config_name"] == out["run"]["endpoint_config_name"]
    assert out["smoke_test"]["runtime"] == "torch"
    assert world.sim.calls.count("InvokeEndpoint") == 2


def test_a_mismatch_after_an_update_restores_the_previous_config(world: pw.PipelineWorld) -> None:
    first = world.run(pw.upload_dataset(world.s3, manifest={"version": "v1"}), "v1")
    assert first["status"] == "SUCCEEDED", first
    old_config = pw.execution_output(first)["run"]["endpoint_config_name"]
    world.sim.test_accuracy = 0.93  # the gate lets it replace the live model
    world.sim.smoke_answers = "different"  # the new endpoint answers as another model would
    second = world.run(pw.upload_dataset(world.s3, manifest={"version": "v2"}), "v2")
    error, cause = world.failure(second)
    assert error == "SmokeTestFailed"
    assert "top-1 'Afghan hound'" in cause and f"back to the previous config {old_config}" in cause
    assert world.sim.calls.count("UpdateEndpoint") == 2  # the blue/green deploy, then the restore
    restore = world.sim.rollouts[-1]
    assert restore["type"] == "ALL_AT_ONCE"
    for _ in range(5):  # the restore completes: InService on the old config again
        endpoint = world.sagemaker.describe_endpoint(EndpointName=pw.ENDPOINT)
    assert endpoint["EndpointStatus"] == "InService" and endpoint["EndpointConfigName"] == old_config
    message = world.notifications()[-1]
    assert "SmokeTestFailed" in message or "smoke test failed" in message
    assert "ConfigureAutoscaling" not in world.states_entered(second["executionArn"])


def test_a_mismatch_on_a_first_deploy_deletes_the_endpoint(world: pw.PipelineWorld) -> None:
    world.sim.smoke_answers = "different"
    execution = world.run(pw.upload_dataset(world.s3), "smoke-first")
    error, cause = world.failure(execution)
    assert error == "SmokeTestFailed" and "was deleted" in cause and "img_0.jpg" in cause
    assert world.sagemaker.list_endpoints()["Endpoints"] == []
    assert world.sagemaker.list_endpoint_configs()["EndpointConfigs"] == []  # Cleanup, once it was gone
    assert world.sagemaker.list_models()["Models"] == []
    assert "smoke test failed" in world.notifications()[-1]


def test_a_rolled_back_endpoint_is_checked_on_the_old_model_and_the_run_says_so(world: pw.PipelineWorld) -> None:
    first = world.run(pw.upload_dataset(world.s3, manifest={"version": "v1"}), "v1")
    out = pw.execution_output(first)
    deployment = {**out["deployment"], "endpoint_config_name": "imgclf-new-config", "previous_config": None}
    with pytest.raises(EndpointDeploymentFailed, match="new model was rolled back") as raised:
        pw.load_handler("smoke_test").handler({"run": out["run"], "deployment": deployment})
    assert f"serves {out['run']['endpoint_config_name']}" in str(raised.value)
    assert "smoke test passed" in str(raised.value)  # the old model still answers as recorded
    assert world.sagemaker.list_endpoints()["Endpoints"] != []  # nothing deleted or restored


def test_the_sim_answers_from_the_served_models_recording(world: pw.PipelineWorld) -> None:
    """The model of a rival checks: a sample whose answers the endpoint does not give fails."""
    world.run(pw.upload_dataset(world.s3), "v1")
    [sample] = world.sim.smoke_samples.values()
    wrong = copy.deepcopy(sample)
    wrong["recordings"]["torch"]["answers"][0]["predictions"][0]["probability"] = 0.5
    invoke = smoke_check.endpoint_invoker(boto3.client("sagemaker-runtime", region_name=pw.REGION), pw.ENDPOINT)
    assert smoke_check.run(sample, invoke).passed
    assert not smoke_check.run(wrong, invoke).passed
