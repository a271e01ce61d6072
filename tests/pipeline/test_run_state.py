"""mlpipeline.run_state: the `run` JSON the state machine carries, parsed once at each handler's boundary."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from mlpipeline.run_state import RunState, RunStateError
from test_requests import make_run

REPO = Path(__file__).resolve().parents[2]
# What Validate returned in a real execution of the ASL (events/ is regenerated from one).
EVENT_RUN = json.loads((REPO / "events" / "deploy.json").read_text())["run"]


def test_the_asl_json_round_trips_key_for_key() -> None:
    run = RunState.from_event(EVENT_RUN)
    assert run.to_dict() == EVENT_RUN
    assert json.loads(json.dumps(run.to_dict())) == EVENT_RUN


def test_plan_run_gives_the_shape_from_event_reads() -> None:
    planned = make_run()
    assert RunState.from_event(json.loads(json.dumps(planned.to_dict()))) == planned


def test_a_missing_key_is_named() -> None:
    broken = {k: v for k, v in EVENT_RUN.items() if k != "bucket"}
    with pytest.raises(RunStateError, match=r"^run: missing key 'bucket'$"):
        RunState.from_event(broken)
    settings = {k: v for k, v in EVENT_RUN["settings"].items() if k != "epochs"}
    with pytest.raises(RunStateError, match=r"run\.settings: missing key 'epochs'"):
        RunState.from_event({**EVENT_RUN, "settings": settings})


def test_an_unknown_key_is_named() -> None:
    with pytest.raises(RunStateError, match=r"run: unknown key 'extra'"):
        RunState.from_event({**EVENT_RUN, "extra": 1})


def test_an_ill_typed_key_is_named() -> None:
    with pytest.raises(RunStateError, match=r"run\.model_name: expected a string, got 3"):
        RunState.from_event({**EVENT_RUN, "model_name": 3})
    with pytest.raises(RunStateError, match=r"run\.splits: expected an object of strings"):
        RunState.from_event({**EVENT_RUN, "splits": ["train"]})
    bad = copy.deepcopy(EVENT_RUN)
    bad["settings"]["epochs"] = "3"  # a string from the ASL that never went through build_settings
    bad["settings"]["use_spot_instances"] = "true"
    with pytest.raises(RunStateError) as caught:
        RunState.from_event(bad)
    assert str(caught.value) == (
        "run.settings.epochs: expected an integer, got '3'; "
        "run.settings.use_spot_instances: expected true or false, got 'true'"
    )
    with pytest.raises(RunStateError, match=r"^run: expected an object, got list$"):
        RunState.from_event([])


def test_a_whole_number_is_a_float_setting() -> None:
    # JSON may carry 70.0 as 70; a boolean is never a number.
    settings = {**EVENT_RUN["settings"], "autoscaling_target_invocations": 70}
    run = RunState.from_event({**EVENT_RUN, "settings": settings})
    assert run.settings.autoscaling_target_invocations == 70.0
    with pytest.raises(RunStateError, match=r"run\.settings\.lr_min: expected a number, got True"):
        RunState.from_event({**EVENT_RUN, "settings": {**EVENT_RUN["settings"], "lr_min": True}})


def test_the_run_state_is_frozen() -> None:
    run = RunState.from_event(EVENT_RUN)
    with pytest.raises(AttributeError):
        run.bucket = "other"  # type: ignore[misc]
