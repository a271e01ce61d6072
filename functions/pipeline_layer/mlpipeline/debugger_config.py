"""A training job's SageMaker Debugger and Profiler fields: none by default, the built-in rules when the
stack opts in (settings.enable_sagemaker_debugger)."""

from __future__ import annotations

from typing import Any

from imgclf import contract
from mlpipeline.run_state import RunState

# SageMaker Debugger is closed to new customers (since 2026-07-30) and SageMaker Profiler ends on
# 2027-06-30, so by default a training job uses neither: train.py evaluates the four rules of the design
# card itself (imgclf.debugger), prints each result as a metric line that MetricDefinitions read
# (contract.METRIC_REGEXES: "rule LossNotDecreasing", ...; 1 = IssuesFound), writes debugger-report.json,
# and sends its learning curves and torch.profiler trace to TensorBoard (TensorBoardOutputConfig).
# Without ProfilerConfig SageMaker still turns on Debugger's basic system monitoring for every training
# job ("By default, for all SageMaker training jobs, Debugger collects resource utilization metrics ...
# every 500 milliseconds", https://docs.aws.amazon.com/sagemaker/latest/dg/debugger-configure-system-monitoring.html),
# so the default request carries ProfilerConfig.DisableProfiler=True, as the SageMaker SDK sends for
# disable_profiler=True (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProfilerConfig.html).
# A tuning job's TrainingJobDefinition has no Debugger, Profiler or TensorBoard fields at all.
#
# The stack parameter EnableSageMakerDebugger (settings.enable_sagemaker_debugger) opts in, for accounts
# that still have Debugger: the same four rules as built-in rules (`rule_to_invoke` names them and the
# regional rule-evaluator image runs them, as the SDK's Rule.sagemaker(rule_configs.<rule>()) does), the
# ProfilerReport rule and system monitoring every 500 ms. Caveat: the smdebug hook that saves the rules'
# tensors is not in the PyTorch 2.x containers, so those rule jobs may find nothing to evaluate; the
# in-script rules stay the signal. The rule jobs never fail the training job. The rules: contract.DEBUGGER_RULES.
# Tensors those rules read (the SDK's defaults for them); saved every 100 steps to keep the output small.
DEBUG_COLLECTIONS = ("losses", "weights", "gradients", "biases")
DEBUG_SAVE_INTERVAL = "100"
PROFILING_INTERVAL_MS = 500


def debugger_and_profiler(run: RunState, debugger_image: str | None) -> dict[str, Any]:
    """No Debugger or Profiler feature unless the stack opted in (see the note on DEBUG_COLLECTIONS)."""
    if not run.settings.enable_sagemaker_debugger:
        return {"ProfilerConfig": {"DisableProfiler": True}}
    if not debugger_image:
        raise ValueError("enable_sagemaker_debugger needs the region's Debugger rule-evaluator image")
    return {
        "DebugHookConfig": {
            "S3OutputPath": run.debugger_s3_uri,
            "CollectionConfigurations": [
                {"CollectionName": c, "CollectionParameters": {"save_interval": DEBUG_SAVE_INTERVAL}}
                for c in DEBUG_COLLECTIONS
            ],
        },
        "DebugRuleConfigurations": [
            {
                "RuleConfigurationName": rule,
                "RuleEvaluatorImage": debugger_image,
                "RuleParameters": {"rule_to_invoke": rule},
            }
            for rule in contract.DEBUGGER_RULES.values()
        ],
        "ProfilerConfig": {
            "S3OutputPath": run.profiler_s3_uri,
            "ProfilingIntervalInMilliseconds": PROFILING_INTERVAL_MS,
        },
        "ProfilerRuleConfigurations": [
            {
                "RuleConfigurationName": "ProfilerReport",
                "RuleEvaluatorImage": debugger_image,
                "RuleParameters": {"rule_to_invoke": "ProfilerReport"},
            },
        ],
    }
