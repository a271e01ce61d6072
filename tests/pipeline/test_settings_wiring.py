"""One edit per setting: mlpipeline.settings.Settings is the list, template.yaml's Parameters hold each
setting's parameter, and statemachine/write_settings.py writes the rest (the ApplyDefaults state's
defaults, the state machine's DefinitionSubstitutions). These tests fail on any place left behind."""

from __future__ import annotations

from dataclasses import fields

import pytest
import stack
import write_settings
from mlpipeline.settings import Settings, template_parameter


def test_the_asl_and_the_template_are_what_the_settings_model_writes() -> None:
    """Fails after a change to Settings until `make settings` has run."""
    asl, template = stack.ASL_PATH.read_text(), stack.TEMPLATE_PATH.read_text()
    assert write_settings.with_asl_defaults(asl) == asl
    assert write_settings.with_template_entries(template) == template


def test_a_setting_left_out_of_either_file_is_caught() -> None:
    asl, template = stack.ASL_PATH.read_text(), stack.TEMPLATE_PATH.read_text()
    missing_entry = template.replace("        Epochs: !Ref Epochs\n", "", 1)
    assert missing_entry != template
    assert write_settings.with_template_entries(missing_entry) == template
    missing_default = asl.replace('"epochs": "${Epochs}",\n', "", 1)
    assert missing_default != asl
    assert write_settings.with_asl_defaults(missing_default) == asl
    with pytest.raises(ValueError, match="settings header"):
        write_settings.with_template_entries(template.replace(write_settings.TEMPLATE_HEADER, ""))


def test_every_setting_has_its_template_parameter() -> None:
    """A field without a parameter would substitute nothing at deploy time; a list setting's parameter
    is a CommaDelimitedList (write_settings joins it)."""
    parameters = stack.template()["Parameters"]
    missing = [f.name for f in fields(Settings) if template_parameter(f.name) not in parameters]
    assert missing == []
    for f in fields(Settings):
        kind = parameters[template_parameter(f.name)]["Type"]
        assert (kind == "CommaDelimitedList") == str(f.type).startswith("list"), (f.name, kind)


def test_parameter_names_are_the_fields_in_camel_case_unless_named() -> None:
    assert template_parameter("autoscaling_target_invocations") == "AutoscalingTargetInvocations"
    assert template_parameter("lr_min") == "LearningRateMin"
