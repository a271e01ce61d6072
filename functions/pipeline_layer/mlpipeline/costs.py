"""What a pipeline run cost, and what the live endpoint costs a month (pure, but for price_list_prices).

Usage comes from the services' own records: every SageMaker job's BillableTimeInSeconds (tuning trials and
the final training job; spot training bills less than TrainingTimeInSeconds, the difference is the saving),
rule-evaluation processing jobs' start/end times, the endpoint's instance-hours while a blue/green update
runs both fleets, Step Functions state transitions and Lambda run time from the execution history.

Prices: the AWS Price List API (pricing:GetProducts) where the role may call it, else prices.json, a dated
table in this folder; the result says which. Both give on-demand USD prices per instance-hour.
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribeTrainingJob.html (BillableTimeInSeconds:
"Multiply BillableTimeInSeconds by the number of instances (InstanceCount) ... to get the total compute time")
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

PRICE_TABLE_PATH = Path(__file__).with_name("prices.json")
HOURS_PER_MONTH = 730  # AWS's own convention on its pricing pages and calculator
# The Price List API answers in these regions only; us-east-1 serves every region's prices.
# https://docs.aws.amazon.com/awsaccountbilling/latest/aboutv2/using-price-list-query-api.html
PRICE_LIST_API_REGION = "us-east-1"
TRAINING, HOSTING, PROCESSING = "Training", "Hosting", "Processing"


@dataclass
class PriceBook:
    """On-demand USD prices for one region, and where they come from."""

    region: str
    source: str
    sagemaker_per_hour: dict[str, dict[str, float]]
    step_functions_per_transition: float
    lambda_per_gb_second: dict[str, float]
    lambda_per_request: float
    missing: list[str] = field(default_factory=list)

    def instance_hour(self, component: str, instance_type: str) -> float | None:
        price = self.sagemaker_per_hour.get(component, {}).get(instance_type)
        if price is None:
            self.missing.append(f"{component} {instance_type}")
        return price


def price_table(region: str, table: Mapping[str, Any] | None = None) -> PriceBook:
    """The dated table's prices for `region` (us-east-1's, said so, where the table lacks the region)."""
    table = table if table is not None else json.loads(PRICE_TABLE_PATH.read_text())
    regions = table["regions"]
    used = region if region in regions else "us-east-1"
    prices = regions[used]
    note = "" if used == region else f"; {region} is not in the table, {used} prices shown"
    return PriceBook(
        region=region,
        source=f"price table of {table['retrieved']} in the repo ({table['source']}){note}",
        sagemaker_per_hour={k: dict(v) for k, v in prices["sagemaker_per_hour"].items()},
        step_functions_per_transition=prices["step_functions_per_transition"],
        lambda_per_gb_second=dict(prices["lambda_per_gb_second"]),
        lambda_per_request=prices["lambda_per_request"],
    )


def parse_price_list_product(document: Mapping[str, Any]) -> tuple[str, str, str, float] | None:
    """(regionCode, component, instance type, USD per hour) of one GetProducts PriceList entry, or None.

    The entry's shape: {"product": {"attributes": {"regionCode", "component", "instanceName" or
    "instanceType" (sometimes suffixed, "ml.m5.xlarge-Training")}}, "terms": {"OnDemand": {sku: {
    "priceDimensions": {id: {"unit": "Hrs", "pricePerUnit": {"USD": "0.2300000000"}}}}}}}."""
    attributes = (document.get("product") or {}).get("attributes") or {}
    instance = attributes.get("instanceName") or attributes.get("instanceType") or ""
    component = attributes.get("component") or ""
    if not instance.startswith("ml.") or not component:
        return None
    instance = instance.split("-", 1)[0]
    for term in ((document.get("terms") or {}).get("OnDemand") or {}).values():
        for dimension in (term.get("priceDimensions") or {}).values():
            usd = (dimension.get("pricePerUnit") or {}).get("USD")
            if dimension.get("unit", "").lower().startswith("hr") and usd is not None and float(usd) > 0:
                return attributes.get("regionCode", ""), component.capitalize(), instance, float(usd)
    return None


def price_list_prices(client: Any, region: str, wanted: Iterable[tuple[str, str]], base: PriceBook) -> PriceBook:
    """`base` with the SageMaker instance prices of `wanted` ((component, instance type)) replaced by the
    Price List API's. Raises what botocore raises (AccessDenied included): the caller falls back to `base`."""
    prices = {k: dict(v) for k, v in base.sagemaker_per_hour.items()}
    for component, instance in sorted(set(wanted)):
        answer = client.get_products(
            ServiceCode="AmazonSageMaker", MaxResults=100,
            Filters=[{"Type": "TERM_MATCH", "Field": "regionCode", "Value": region},
                     {"Type": "TERM_MATCH", "Field": "component", "Value": component}])
        for entry in answer.get("PriceList", []):
            parsed = parse_price_list_product(json.loads(entry) if isinstance(entry, str) else entry)
            if parsed and parsed[0] == region and parsed[2] == instance:
                prices.setdefault(component, {})[instance] = parsed[3]
                break
    return PriceBook(region, f"AWS Price List API ({datetime.now().date().isoformat()})", prices,
                     base.step_functions_per_transition, base.lambda_per_gb_second, base.lambda_per_request)


# --------------------------------------------------------------------------------------------------
# Usage


@dataclass(frozen=True)
class JobUsage:
    name: str
    kind: str  # "tuning trial", "training", "rule evaluation"
    component: str  # TRAINING | PROCESSING (the price list's component)
    instance_type: str
    instance_count: int
    billable_seconds: float
    run_seconds: float  # TrainingTimeInSeconds (what on-demand would have billed)
    spot: bool = False


def training_job_usage(description: Mapping[str, Any], kind: str) -> JobUsage:
    """From a DescribeTrainingJob answer."""
    resources = description.get("ResourceConfig") or {}
    billable = float(description.get("BillableTimeInSeconds") or 0)
    return JobUsage(description["TrainingJobName"], kind, TRAINING, resources.get("InstanceType", "?"),
                    int(resources.get("InstanceCount") or 1), billable,
                    float(description.get("TrainingTimeInSeconds") or billable),
                    bool(description.get("EnableManagedSpotTraining")))


def processing_job_usage(description: Mapping[str, Any], kind: str = "rule evaluation") -> JobUsage:
    """From a DescribeProcessingJob answer: processing bills its instances from start to end, per second."""
    cluster = ((description.get("ProcessingResources") or {}).get("ClusterConfig")) or {}
    start, end = description.get("ProcessingStartTime"), description.get("ProcessingEndTime")
    seconds = (end - start).total_seconds() if isinstance(start, datetime) and isinstance(end, datetime) else 0.0
    return JobUsage(description["ProcessingJobName"], kind, PROCESSING, cluster.get("InstanceType", "?"),
                    int(cluster.get("InstanceCount") or 1), seconds, seconds)


@dataclass(frozen=True)
class EndpointUsage:
    """The new fleet while a rollout runs (update: both fleets bill; create: the new endpoint's start)."""

    instance_type: str
    instance_count: int
    seconds: float
    action: str


@dataclass(frozen=True)
class OrchestrationUsage:
    transitions: int
    lambda_gb_seconds: float
    lambda_requests: int
    architecture: str = "arm64"


def _usd(value: float) -> float:
    return round(value, 4)


def run_cost(jobs: list[JobUsage], endpoint: EndpointUsage | None, orchestration: OrchestrationUsage | None,
             prices: PriceBook) -> dict[str, Any]:
    """The run's cost: one item per job and per other charge, the total, the spot savings, one line."""
    items: list[dict[str, Any]] = []
    total = savings = 0.0
    for job in jobs:
        hourly = prices.instance_hour(job.component, job.instance_type)
        hours = job.billable_seconds * job.instance_count / 3600
        usd = hours * hourly if hourly is not None else None
        saved = ((job.run_seconds - job.billable_seconds) * job.instance_count / 3600 * hourly
                 if hourly is not None and job.spot else 0.0)
        items.append({"item": job.kind, "name": job.name, "instance": f"{job.instance_count} × {job.instance_type}",
                      "billable s": job.billable_seconds, "usd/hour": hourly,
                      "usd": _usd(usd) if usd is not None else None,
                      "spot saved usd": _usd(saved) if job.spot else None})
        total += usd or 0.0
        savings += saved
    if endpoint is not None:
        hourly = prices.instance_hour(HOSTING, endpoint.instance_type)
        usd = endpoint.seconds * endpoint.instance_count / 3600 * hourly if hourly is not None else None
        label = "endpoint: new fleet beside the old (blue/green)" if endpoint.action == "update" \
            else f"endpoint: {endpoint.action} until InService"
        items.append({"item": label, "name": endpoint.action,
                      "instance": f"{endpoint.instance_count} × {endpoint.instance_type}",
                      "billable s": round(endpoint.seconds, 1), "usd/hour": hourly,
                      "usd": _usd(usd) if usd is not None else None, "spot saved usd": None})
        total += usd or 0.0
    if orchestration is not None:
        sfn = orchestration.transitions * prices.step_functions_per_transition
        lam = (orchestration.lambda_gb_seconds * prices.lambda_per_gb_second[orchestration.architecture]
               + orchestration.lambda_requests * prices.lambda_per_request)
        items.append({"item": "Step Functions state transitions", "name": str(orchestration.transitions),
                      "usd": _usd(sfn)})
        items.append({"item": "Lambda", "name": f"{orchestration.lambda_requests} invocations, "
                      f"{orchestration.lambda_gb_seconds:.1f} GB-s", "usd": _usd(lam)})
        total += sfn + lam
    missing = sorted(set(prices.missing))
    line = f"Run cost: ${total:.2f}"
    if savings:
        line += f" (managed spot saved ${savings:.2f})"
    if missing:
        line += f"; no price for {', '.join(missing)}, not counted"
    return {"items": items, "total_usd": _usd(total), "spot_savings_usd": _usd(savings), "line": line,
            "price_source": prices.source, "unpriced": missing}


def endpoint_monthly(instance_type: str, instance_count: int, prices: PriceBook) -> dict[str, Any]:
    """The live endpoint at its current instance count and type, for a 730-hour month."""
    hourly = prices.instance_hour(HOSTING, instance_type)
    return {"instance_type": instance_type, "instance_count": instance_count, "usd_per_hour": hourly,
            "usd": _usd(hourly * instance_count * HOURS_PER_MONTH) if hourly is not None else None}


def as_dict(usage: JobUsage | EndpointUsage | OrchestrationUsage) -> dict[str, Any]:
    return asdict(usage)
