"""The `imgclf` command as a script sees it: installed console scripts, --help on every command, exit
codes, and the facts it shares with the stack (output keys) and with local mode (`make local`'s summary)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cli_world import REPO, pw
from moto import mock_aws

from imgclf_cli import stack as stack_outputs
from imgclf_cli.errors import CliError, ExitCode
from imgclf_cli.main import main
from localmode.cli import print_summary
from localmode.pipeline import RunSummary

HELP = [
    (["--help"], "usage: imgclf "),
    (["aws", "--help"], "usage: imgclf aws "),
    (["aws", "upload", "--help"], "usage: imgclf aws upload "),
    (["aws", "watch", "--help"], "usage: imgclf aws watch "),
    (["aws", "capture-to-dataset", "--help"], "usage: imgclf aws capture-to-dataset "),
    (["predict", "--help"], "usage: imgclf predict "),
    (["local", "--help"], "usage: imgclf local "),
    (["local", "run", "--help"], "usage: imgclf local run "),
    (["local", "watch", "--help"], "usage: imgclf local watch "),
    (["local", "serve", "--help"], "usage: imgclf local serve "),
    (["local", "stop", "--help"], "usage: imgclf local stop "),
]


@pytest.mark.parametrize(("argv", "usage"), HELP, ids=[" ".join(a) for a, _ in HELP])
def test_every_command_has_help(argv, usage, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(usage)


def test_help_lists_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["aws", "upload", "--help"])
    assert "exit codes: 0 ok, 1 failed, 2 bad_input, 3 not_deployed, 4 service_error, 5 timed_out" in \
        capsys.readouterr().out.replace("\n", " ")


@pytest.mark.parametrize("argv", [[], ["predict"], ["aws", "upload", "somewhere"], ["aws", "teleport"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == ExitCode.BAD_INPUT == 2
    assert "usage: imgclf" in capsys.readouterr().err


def test_exit_codes_are_distinct():
    assert len({code.value for code in ExitCode}) == len(ExitCode)


def test_console_scripts_are_installed_and_run():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"imgclf": "imgclf_cli.main:main", "imgclf-local": "localmode.cli:main"}
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function))
    bin_dir = Path(sys.executable).parent
    for command in ([str(bin_dir / "imgclf"), "--help"], [str(bin_dir / "imgclf-local"), "--help"],
                    [sys.executable, "-m", "imgclf_cli", "--help"], [sys.executable, "-m", "localmode", "--help"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (command, result.stderr[-2000:])
        assert result.stdout.startswith("usage: ")


def test_the_stack_outputs_it_reads_are_the_templates():
    assert set(stack_outputs.OUTPUT_KEYS) <= set(pw.template()["Outputs"])


def test_a_missing_stack_is_bad_input(aws_env):
    import boto3

    with mock_aws(), pytest.raises(CliError, match="no stack named 'nope'") as refused:
        stack_outputs.read_stack(boto3.client("cloudformation", region_name=pw.REGION), "nope")
    assert refused.value.code == ExitCode.BAD_INPUT


def test_make_local_summary_prints_the_pages_url(capsys):
    print_summary(RunSummary(
        run_id="r", run_dir="runs/r", best_hyperparameters={}, best_objective=0.5, metrics={"test accuracy": 0.9},
        gate={"passed": True, "reason": "ok"}, model_dir="runs/r/model", report="runs/r/report.html",
        endpoint={"url": "http://127.0.0.1:8080", "pid": 1, "log_path": "runs/r/endpoint.log"}))
    assert "  try it in a browser : http://127.0.0.1:8080/\n" in capsys.readouterr().out
