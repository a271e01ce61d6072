"""`python -m localmode COMMAND`: the whole pipeline on one machine, with no AWS account and no Docker.

    run     tune -> train the best -> gate -> serve -> invoke through the inference Lambda -> report
    watch   start a run whenever a manifest lands in a local "bucket" folder (like the S3 trigger)
    serve   serve a model folder or model.tar.gz over SageMaker's container protocol
    stop    stop the endpoint a run left answering
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from dataclasses import fields
from pathlib import Path

from imgclf.manifest import ManifestError
from localmode import endpoint as local_endpoint
from localmode.pipeline import REPO_ROOT, RunOptions, RunSummary, run
from localmode.training_job import stop_all_jobs

DEFAULTS = RunOptions()


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-dir", type=Path, default=DEFAULTS.runs_dir,
                        help="where runs, the live endpoint's record and reports go (default: %(default)s)")
    tuning = parser.add_argument_group("tuning (Optuna TPE; same search space and objective as SageMaker)")
    # The flags carry the stack's setting names (mlpipeline.settings), as the manifest's overrides do.
    tuning.add_argument("--max-jobs", type=int, default=DEFAULTS.max_jobs,
                        help="trials in all (default: %(default)s)")
    tuning.add_argument("--max-parallel-jobs", type=int, default=DEFAULTS.max_parallel_jobs,
                        help="trials at once (default: %(default)s)")
    tuning.add_argument("--tuning-epochs", type=int, default=DEFAULTS.tuning_epochs,
                        help="epochs per trial (default: %(default)s)")
    training = parser.add_argument_group("the best model's training")
    training.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="(default: %(default)s)")
    training.add_argument("--patience", type=int, default=DEFAULTS.patience,
                          help="early-stopping patience in epochs (default: %(default)s)")
    training.add_argument("--training-instance-count", type=int, default=DEFAULTS.training_instance_count,
                          help="processes, data-parallel like a multi-instance job (default: %(default)s)")
    training.add_argument("--no-final-feature-cache", dest="final_feature_cache", action="store_false",
                          help="train the best model on augmented images instead of cached features")
    training.add_argument("--backbone", default=DEFAULTS.backbone, help="(default: %(default)s)")
    training.add_argument("--pretrained", default=DEFAULTS.pretrained, help="(default: %(default)s)")
    training.add_argument("--image-size", type=int, default=DEFAULTS.image_size, help="(default: %(default)s)")
    training.add_argument("--precision", default=DEFAULTS.precision, choices=("auto", "fp32", "bf16"))
    training.add_argument("--seed", type=int, default=DEFAULTS.seed)
    serving = parser.add_argument_group("gate and endpoint")
    serving.add_argument("--quality-threshold", type=float, default=DEFAULTS.quality_threshold,
                         help="the quality gate's test-accuracy threshold, 0..1 (default: %(default)s)")
    serving.add_argument("--no-serve", dest="serve", action="store_false", help="stop after the gate")
    serving.add_argument("--endpoint-name", default=DEFAULTS.endpoint_name)
    serving.add_argument("--port", type=int, default=DEFAULTS.port, help="(default: %(default)s)")
    serving.add_argument("--workers", type=int, default=DEFAULTS.workers, help="server worker processes")
    serving.add_argument("--samples", type=int, default=DEFAULTS.samples,
                         help="test images sent through the inference Lambda's handler (default: %(default)s)")


def options_from(args: argparse.Namespace, **overrides: object) -> RunOptions:
    values = {f.name: getattr(args, f.name) for f in fields(RunOptions) if hasattr(args, f.name)}
    return RunOptions(**{**values, **overrides})


def print_summary(summary: RunSummary) -> None:
    out = sys.stdout
    out.write(f"\n== Local run {summary.run_id} ==\n")
    out.write(f"best hyperparameters : {summary.best_hyperparameters} "
              f"(average test loss {summary.best_objective:.4f})\n")
    accuracy = summary.metrics.get("test accuracy")
    out.write(f"test accuracy        : {accuracy:.4f}\n" if accuracy is not None else "test accuracy        : n/a\n")
    out.write(f"quality gate         : {'approved' if summary.gate['passed'] else 'REJECTED'} "
              f"({summary.gate['reason']})\n")
    out.write(f"model                : {summary.model_dir}\n")
    out.write(f"report               : {summary.report}\n")
    if summary.predictions:
        out.write("predictions (through the inference Lambda's handler):\n")
        for item in summary.predictions:
            answer = item["answer"] or {}
            top = answer.get("predictions") if isinstance(answer, dict) else None
            shown = ", ".join(f"{p['label']} {p['probability']:.2f}" for p in top) if top else answer
            out.write(f"  {Path(item['image']).name:<24} true {item['true_class']:<18} "
                      f"-> [{item['status']}] {shown}\n")
    if summary.endpoint:
        out.write(f"endpoint             : {summary.endpoint['url']} (pid {summary.endpoint['pid']}, "
                  f"log {summary.endpoint['log_path']})\n")
        out.write(f"  try it in a browser : {summary.endpoint['url']}/\n")
        out.write("  try it              : curl -s -H 'Content-Type: image/png' --data-binary "
                  f"@{summary.predictions[0]['image'] if summary.predictions else 'IMAGE.png'} "
                  f"{summary.endpoint['url']}/invocations\n")
        out.write(f"  stop it             : python -m localmode stop --runs-dir {Path(summary.run_dir).parent}"
                  "   (or: make stop)\n")


def _stop_jobs_and_interrupt(signum: int, frame: object) -> None:
    """Ctrl-C: stop the training processes first (parallel trials run in threads that would otherwise be
    waited for), then interrupt the main thread as Python's default handler does."""
    stop_all_jobs()
    raise KeyboardInterrupt


def main(argv: list[str] | None = None, prog: str = "python -m localmode") -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:  # the server has its own arguments (and --help): hand them over whole
        from localmode import server

        return server.main(argv[1:], prog=f"{prog} serve")
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    run_parser = commands.add_parser("run", help="the whole pipeline once, on --data")
    run_parser.add_argument("--data", dest="data_dir", type=Path, default=DEFAULTS.data_dir,
                            help="a dataset in the dogImages layout (default: the bundled sample)")
    run_parser.add_argument("--run-id", default=None, help="resume or name a run (default: from data + settings)")
    add_run_arguments(run_parser)

    watch_parser = commands.add_parser("watch", help="start a run when datasets/<name>/manifest.json lands")
    watch_parser.add_argument("--bucket", type=Path, default=REPO_ROOT / ".local-bucket",
                              help="the local stand-in for the stack's S3 bucket (default: %(default)s)")
    watch_parser.add_argument("--interval", type=float, default=2.0, help="seconds between looks")
    watch_parser.add_argument("--once", action="store_true", help="handle what is there now, then exit")
    add_run_arguments(watch_parser)

    serve_parser = commands.add_parser("serve", help="serve a model folder or model.tar.gz (SageMaker protocol)",
                                       add_help=False)
    serve_parser.add_argument("server_args", nargs=argparse.REMAINDER)

    stop_parser = commands.add_parser("stop", help="stop the endpoint a run left answering")
    stop_parser.add_argument("--runs-dir", type=Path, default=DEFAULTS.runs_dir)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("optuna", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    if args.command in ("run", "watch"):
        signal.signal(signal.SIGINT, _stop_jobs_and_interrupt)
    try:
        if args.command == "run":
            summary = run(options_from(args))
            print_summary(summary)
            return 0 if summary.gate["passed"] else 3
        if args.command == "watch":
            from localmode import watch

            return watch.watch(args.bucket, options_from(args), interval=args.interval, once=args.once,
                               on_summary=print_summary)
        if args.command == "stop":
            stopped = local_endpoint.stop(args.runs_dir)
            print(f"stopped {stopped.name} at {stopped.url}" if stopped else "no local endpoint is recorded")
            return 0
    except KeyboardInterrupt:
        stop_all_jobs(wait_seconds=15)  # whatever a worker thread started while we were being interrupted
        print("\ninterrupted: finished trials are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, ManifestError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 1


__all__ = ["main"]
