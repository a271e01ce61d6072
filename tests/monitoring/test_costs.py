"""mlpipeline.costs: a fixed price table, recorded billable times, every number checked by hand once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from mlpipeline import costs

TABLE = {
    "retrieved": "2026-01-01", "source": "test table",
    "regions": {"us-east-1": {
        "sagemaker_per_hour": {"Training": {"ml.g4dn.xlarge": 0.7364}, "Hosting": {"ml.m5.large": 0.115},
                               "Processing": {"ml.m5.xlarge": 0.23}},
        "step_functions_per_transition": 0.000025,
        "lambda_per_gb_second": {"arm64": 0.0000133334, "x86_64": 0.0000166667},
        "lambda_per_request": 0.0000002}},
}


def _training(name: str, billable: int, seconds: int, count: int = 1, spot: bool = False) -> dict:
    """The DescribeTrainingJob fields the cost reads (API_DescribeTrainingJob.html)."""
    return {"TrainingJobName": name, "BillableTimeInSeconds": billable, "TrainingTimeInSeconds": seconds,
            "EnableManagedSpotTraining": spot,
            "ResourceConfig": {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": count, "VolumeSizeInGB": 30}}


def test_run_cost_by_hand():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    jobs = [
        costs.training_job_usage(_training("t-001", 600, 600), "tuning trial"),
        costs.training_job_usage(_training("t-002", 300, 900, spot=True), "tuning trial"),
        costs.training_job_usage(_training("final", 1200, 1200, count=2), "training"),
        costs.processing_job_usage({"ProcessingJobName": "rule-overfit", "ProcessingStartTime": start,
                                    "ProcessingEndTime": start + timedelta(seconds=360),
                                    "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.xlarge",
                                                                              "InstanceCount": 1}}}),
    ]
    endpoint = costs.EndpointUsage("ml.m5.large", 2, 1800, "update")
    orchestration = costs.OrchestrationUsage(transitions=80, lambda_gb_seconds=100, lambda_requests=40)
    cost = costs.run_cost(jobs, endpoint, orchestration, costs.price_table("us-east-1", TABLE))
    usd = [item["usd"] for item in cost["items"]]
    # 600 s of 0.7364/h = 0.12273; spot 300 s = 0.06137 (saved 600 s = 0.12273); 2 x 1200 s = 0.49093;
    # 360 s of 0.23/h = 0.023; 2 x 0.5 h of 0.115 = 0.115; 80 x 0.000025 = 0.002;
    # 100 GB-s x 0.0000133334 + 40 x 0.0000002 = 0.0013413
    assert usd == pytest.approx([0.1227, 0.0614, 0.4909, 0.023, 0.115, 0.002, 0.0013], abs=1e-4)
    assert cost["total_usd"] == pytest.approx(0.8164, abs=1e-4)
    assert cost["spot_savings_usd"] == pytest.approx(0.1227, abs=1e-4)
    assert cost["line"] == "Run cost: $0.82 (managed spot saved $0.12)"
    assert cost["price_source"].startswith("price table of 2026-01-01")


def test_an_unpriced_instance_is_named_not_guessed():
    job = costs.training_job_usage({**_training("x", 60, 60), "ResourceConfig": {"InstanceType": "ml.p5.48xlarge"}},
                                   "training")
    cost = costs.run_cost([job], None, None, costs.price_table("us-east-1", TABLE))
    assert cost["items"][0]["usd"] is None and cost["unpriced"] == ["Training ml.p5.48xlarge"]
    assert "no price for Training ml.p5.48xlarge" in cost["line"]


def test_endpoint_monthly_by_hand():
    # 1 x 0.115/h x 730 h = 83.95
    assert costs.endpoint_monthly("ml.m5.large", 1, costs.price_table("us-east-1", TABLE))["usd"] == 83.95
    assert costs.endpoint_monthly("ml.m5.large", 3, costs.price_table("us-east-1", TABLE))["usd"] == 251.85


def test_a_region_missing_from_the_table_says_so():
    book = costs.price_table("eu-west-1", TABLE)
    assert "eu-west-1 is not in the table, us-east-1 prices shown" in book.source


def _price_list_entry(component: str, instance: str, usd: str, region: str = "us-east-1") -> str:
    """One PriceList string as GetProducts returns it (a JSON document per product; shape from
    https://docs.aws.amazon.com/awsaccountbilling/latest/aboutv2/price-changes.html#price-list-query-api-response)."""
    return json.dumps({
        "product": {"productFamily": "ML Instance", "sku": "ABC123",
                    "attributes": {"regionCode": region, "component": component, "instanceName": instance,
                                   "servicecode": "AmazonSageMaker", "usagetype": f"USE1-Train:{instance}"}},
        "serviceCode": "AmazonSageMaker",
        "terms": {"OnDemand": {"ABC123.JRTCKXETXF": {"priceDimensions": {"ABC123.JRTCKXETXF.6YS6EN2CT7": {
            "unit": "Hrs", "pricePerUnit": {"USD": usd}, "description": "$0.7364 per hour"}}}}}})


class _PricingClient:
    def __init__(self) -> None:
        self.calls: list[dict] = []

    def get_products(self, **kwargs):
        self.calls.append(kwargs)
        component = kwargs["Filters"][1]["Value"]
        return {"PriceList": [_price_list_entry(component, "ml.m5.large", "0.1000000000"),
                              _price_list_entry(component, "ml.g4dn.xlarge", "0.9000000000", "eu-west-1"),
                              _price_list_entry(component, "ml.g4dn.xlarge", "0.8000000000")]}


def test_price_list_api_prices_replace_the_table():
    client = _PricingClient()
    book = costs.price_list_prices(client, "us-east-1", [("Training", "ml.g4dn.xlarge"), ("Hosting", "ml.m5.large")],
                                   costs.price_table("us-east-1", TABLE))
    assert book.instance_hour("Training", "ml.g4dn.xlarge") == 0.8  # us-east-1's, not eu-west-1's
    assert book.instance_hour("Hosting", "ml.m5.large") == 0.1
    assert book.source.startswith("AWS Price List API")
    assert {c["ServiceCode"] for c in client.calls} == {"AmazonSageMaker"}


def test_the_repo_table_is_dated_and_prices_the_template_defaults():
    from samtranslator.yaml_helper import yaml_parse

    template = yaml_parse((costs.PRICE_TABLE_PATH.parents[3] / "template.yaml").read_text())
    defaults = {name: p.get("Default") for name, p in template["Parameters"].items()}
    book = costs.price_table("us-east-1")
    assert datetime.fromisoformat(json.loads(costs.PRICE_TABLE_PATH.read_text())["retrieved"])
    assert book.instance_hour("Training", defaults["TuningInstanceType"]) is not None
    assert book.instance_hour("Training", defaults["TrainingInstanceType"]) is not None
    assert book.instance_hour("Hosting", defaults["EndpointInstanceType"]) is not None
