"""The `imgclf` console script (pyproject.toml [project.scripts]; also `python -m imgclf_cli`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

import imgclf_cli
from imgclf import contract
from imgclf_cli import capture, predict, upload, watch
from imgclf_cli.errors import EXIT_CODES_HELP, CliError, ExitCode

PROG = "imgclf"


def _session(args: argparse.Namespace) -> Any:
    import boto3

    return boto3.session.Session(profile_name=args.profile, region_name=args.region)


def _stack(session: Any, name: str) -> Any:
    from imgclf_cli.stack import read_stack

    return read_stack(session.client("cloudformation"), name)


def _upload(args: argparse.Namespace) -> ExitCode:
    session = _session(args)
    return upload.run(session, _stack(session, args.stack), args.directory, dataset=args.dataset,
                      version=args.version, jobs=args.jobs, wait_s=args.wait, dry_run=args.dry_run)


def _watch(args: argparse.Namespace) -> ExitCode:
    session = _session(args)
    stack = _stack(session, args.stack) if args.stack else None
    arn = watch.resolve_execution(session.client("stepfunctions"), args.execution,
                                  stack.state_machine_arn if stack else None)
    return watch.follow(session, arn, endpoint_name=stack.endpoint_name if stack else None,
                        interval_s=args.interval, timeout_s=args.timeout)


def _capture_to_dataset(args: argparse.Namespace) -> ExitCode:
    return capture.run(args.captures, args.out, version=args.version, holdout_percent=args.holdout,
                       stdout=sys.stdout)


def _predict(args: argparse.Namespace) -> ExitCode:
    session = _session(args) if (args.stack or args.sign) else None
    if args.url:
        url = args.url
    elif args.stack:
        url = _stack(session, args.stack).inference_url
    else:
        from localmode.endpoint import read_record
        from localmode.pipeline import RunOptions
        from localmode.server import DEFAULT_HOST, DEFAULT_PORT

        record = read_record(args.runs_dir or RunOptions().runs_dir)
        url = record.url if record else f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
    return predict.run(args.images, url, top_k=args.top_k, as_json=args.json, timeout=args.timeout,
                       sign=predict.sigv4_signer(session) if args.sign else None)


def _aws_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default=None, help="AWS named profile (default: the usual credential chain)")
    parser.add_argument("--region", default=None, help="AWS region (default: the profile's / AWS_REGION)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=imgclf_cli.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_CODES_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    aws = commands.add_parser("aws", help="the AWS workflow: upload a dataset, watch the run",
                              description="The AWS workflow on a stack deployed with `sam deploy`.",
                              epilog=EXIT_CODES_HELP)
    aws_commands = aws.add_subparsers(dest="aws_command", required=True, metavar="COMMAND")

    up = aws_commands.add_parser(
        "upload", help="check a dataset locally, upload it (resumable), manifest last; print the run",
        description=upload.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_CODES_HELP)
    up.add_argument("directory", type=Path, metavar="DIR",
                    help="the dataset: DIR/train, DIR/valid, DIR/test (dogImages layout), optional DIR/manifest.json")
    up.add_argument("--stack", required=True, help="the stack's name (its outputs name the bucket and pipeline)")
    up.add_argument("--dataset", default=None, help="dataset name in the bucket (default: DIR's name)")
    up.add_argument("--version", default=None,
                    help="the manifest's version: a new one runs the pipeline again on the same images")
    up.add_argument("--jobs", type=int, default=upload.DEFAULT_JOBS, help="parallel transfers (default: %(default)s)")
    up.add_argument("--wait", type=float, default=upload.DEFAULT_WAIT_S,
                    help="seconds to wait for the execution to start (default: %(default)s)")
    up.add_argument("--dry-run", action="store_true", help="check and compare only; upload nothing")
    _aws_options(up)
    up.set_defaults(run=_upload)

    wt = aws_commands.add_parser(
        "watch", help="follow a pipeline run live until it ends",
        description=watch.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_CODES_HELP)
    wt.add_argument("execution", nargs="?", default=None, metavar="EXECUTION",
                    help="execution ARN, or its name with --stack (default: the stack's latest execution)")
    wt.add_argument("--stack", default=None, help="the stack's name")
    wt.add_argument("--interval", type=float, default=watch.DEFAULT_INTERVAL_S,
                    help="seconds between looks (default: %(default)s)")
    wt.add_argument("--timeout", type=float, default=None, help="give up (exit 5) after this many seconds")
    _aws_options(wt)
    wt.set_defaults(run=_watch)

    cap = aws_commands.add_parser(
        "capture-to-dataset", help="turn the endpoint's captured requests into a dataset folder to relabel",
        description=capture.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_CODES_HELP)
    cap.add_argument("captures", type=Path, nargs="+", metavar="CAPTURES",
                     help="capture .jsonl files, or folders of them (`aws s3 sync s3://BUCKET/data-capture/ DIR`)")
    cap.add_argument("--out", type=Path, required=True, metavar="DIR",
                     help="the dataset folder to write (may be a copy of the previous dataset: images are added)")
    cap.add_argument("--version", default=None, help="the manifest's version (default: keep DIR's, or none)")
    cap.add_argument("--holdout", type=int, default=capture.DEFAULT_HOLDOUT_PERCENT,
                     help="percent of images for valid and test, half each (default: %(default)s)")
    cap.set_defaults(run=_capture_to_dataset)

    pr = commands.add_parser(
        "predict", help="classify images: top-k as a table, or --json",
        description=predict.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_CODES_HELP)
    pr.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="JPEG or PNG files")
    where = pr.add_mutually_exclusive_group()
    where.add_argument("--url", default=None, help="a classifier URL: the stack's InferenceUrl, or a local endpoint")
    where.add_argument("--stack", default=None, help="use the stack's InferenceUrl output")
    where.add_argument("--local", action="store_true",
                       help="the local endpoint `make local` left running (the default)")
    pr.add_argument("--runs-dir", type=Path, default=None, help="local mode's runs folder (with --local)")
    pr.add_argument("--top-k", type=int, default=contract.DEFAULT_TOP_K,
                    help="classes per image (default: %(default)s)")
    pr.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pr.add_argument("--timeout", type=float, default=predict.DEFAULT_TIMEOUT_S, help="seconds per request")
    pr.add_argument("--sign", action="store_true",
                    help="sign requests with SigV4 (a Function URL deployed with InferenceAuthType AWS_IAM)")
    _aws_options(pr)
    pr.set_defaults(run=_predict)

    commands.add_parser("local", help="local mode: run, watch, serve, stop (`imgclf local --help`)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["local"]:  # local mode parses its own arguments (and --help): hand them over whole
        from localmode import cli as local_cli

        return local_cli.main(argv[1:], prog=f"{PROG} local")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args))
    except CliError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return int(error.code)
    except (NoCredentialsError, NoRegionError) as error:
        print(f"{PROG}: {error} (configure the AWS CLI, or pass --profile/--region)", file=sys.stderr)
        return int(ExitCode.SERVICE_ERROR)
    except (ClientError, BotoCoreError) as error:
        print(f"{PROG}: AWS said: {error}", file=sys.stderr)
        return int(ExitCode.SERVICE_ERROR)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)


__all__ = ["build_parser", "main"]
