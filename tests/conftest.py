"""Fixtures shared across test folders: a real headless browser, a trained model served by the local
endpoint, and the folder where tests leave artifacts (screenshots) for people to look at.

The browser is Debian's `chromium` (/usr/bin/chromium, installed by `make test`) driven by Playwright for
Python: Playwright's own browser download needs the internet, which CI does not have.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"  # gitignored
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root in a container, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# The serving tests' tiny model (train.py, one epoch, ~25 s), shared by every folder outside tests/serving
# through this one session fixture; tests/serving keeps its own definition (same function).
_spec = importlib.util.spec_from_file_location("serving_fixtures", REPO / "tests" / "serving" / "conftest.py")
assert _spec is not None and _spec.loader is not None
serving_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(serving_fixtures)
trained_model_dir = serving_fixtures.trained_model_dir


# The unit tier (`make test-unit`, `pytest --unit-tier`): the test files named by pyproject's `unit_tier`,
# pure modules only. Modules that make a test slow or need a simulated AWS must not load in it: a test file
# that imports one (itself or through what it imports) fails the tier at collection, one that imports it while
# it runs fails that test.
NOT_IN_UNIT_TIER = ("torch", "moto")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("unit_tier", "test files (or folders) of the fast unit tier", type="paths", default=[])
    parser.addoption("--unit-tier", action="store_true", help="run only the unit tier (pyproject unit_tier)")
    parser.addoption("--no-unit-tier", action="store_true", help="run everything but the unit tier")


def _unit_paths(config: pytest.Config) -> list[Path]:
    return [Path(p).resolve() for p in config.getini("unit_tier")]


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    path = collection_path.resolve()
    if config.getoption("--no-unit-tier"):
        return True if any(path == unit or unit in path.parents for unit in _unit_paths(config)) else None
    if not config.getoption("--unit-tier"):
        return None
    inside = any(path == unit or unit in path.parents or path in unit.parents for unit in _unit_paths(config))
    return None if inside else True


def _loaded_forbidden() -> list[str]:
    return [name for name in NOT_IN_UNIT_TIER if name in sys.modules]


_FIRST_IMPORTER: dict[str, str] = {}  # forbidden module -> the first test file whose collection loaded it


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.nodeid.endswith(".py"):
        for name in _loaded_forbidden():
            _FIRST_IMPORTER.setdefault(name, report.nodeid)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--unit-tier") and (loaded := _loaded_forbidden()):
        raise pytest.UsageError("the unit tier must not load " + ", ".join(
            f"{name} (loaded by {_FIRST_IMPORTER.get(name, 'a conftest')})" for name in loaded)
            + ": take the file out of pyproject's unit_tier or drop the import")


@pytest.fixture(autouse=True)
def _unit_tier_stays_pure(request: pytest.FixtureRequest) -> Iterator[None]:
    before = set(_loaded_forbidden())
    yield
    if request.config.getoption("--unit-tier") and (loaded := sorted(set(_loaded_forbidden()) - before)):
        pytest.fail(f"{request.node.nodeid} loaded {', '.join(loaded)} in the unit tier")


@pytest.fixture(scope="session")
def model_classes(trained_model_dir: Path) -> list[str]:
    """The labels the trained model answers with, in class-id order (its metadata.json)."""
    return list(json.loads((trained_model_dir / "metadata.json").read_text())["class_names"])


@pytest.fixture(scope="session")
def class_image() -> Callable[..., Image.Image]:
    """class_image(class_index, (width, height), seed): a noisy image of one of the model's classes."""
    return lambda class_index, size, seed=0: serving_fixtures._class_image(
        np.random.default_rng(seed), class_index, size)


@pytest.fixture(scope="session")
def local_endpoint(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """localmode.server on the trained model (one worker), as `make local` leaves it running."""
    from localmode.supervisor import start_background

    log = tmp_path_factory.mktemp("local-endpoint") / "server.log"
    with start_background(trained_model_dir, workers=1, threads=1, log_path=log) as server:
        yield server


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (Playwright's Browser). Per module, not per session: Playwright's sync
    API runs an asyncio loop on the main thread while it is started, and a later test's asyncio.run()
    would find it running."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test`, which installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def new_page(chromium: Any) -> Iterator[Callable[..., tuple[Any, list[str]]]]:
    """new_page(**context_options) -> (page, problems): a page in a fresh browser context, and the console
    errors and uncaught exceptions it produces (a CSP violation is a console error)."""
    contexts: list[Any] = []

    def open_page(**options: Any) -> tuple[Any, list[str]]:
        browser_context = chromium.new_context(**options)
        contexts.append(browser_context)
        page = browser_context.new_page()
        problems: list[str] = []
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        return page, problems

    yield open_page
    for browser_context in contexts:
        browser_context.close()
