"""What every `imgclf` command exits with, so that scripts can tell the outcomes apart."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # done: uploaded and started, deployed, every image answered
    FAILED = 1  # the run failed, timed out or was aborted; or the endpoint refused an image
    BAD_INPUT = 2  # a usage error, or input refused locally before anything was sent (argparse uses 2 too)
    NOT_DEPLOYED = 3  # the run ended well but put no new model live (quality gate, duplicate dataset version)
    SERVICE_ERROR = 4  # AWS or the endpoint could not be reached, or refused the credentials
    TIMED_OUT = 5  # waited as long as asked, and what was awaited had not happened yet
    INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


EXIT_CODES_HELP = "exit codes: " + ", ".join(f"{code.value} {code.name.lower()}" for code in ExitCode)


class CliError(Exception):
    """A failure to report in one line (no traceback), with the exit code it maps to."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILED):
        super().__init__(message)
        self.code = code
