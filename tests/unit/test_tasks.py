"""The task registry: names, duplicates, unknown names, entry-point plug-ins, and what the config,
`lmforge init` and the reports take from a task's spec."""

from __future__ import annotations

import pytest

from lmforge.config import config_from_dict
from lmforge.errors import ConfigError, UserError
from lmforge.starter import hidden_data_keys
from lmforge.tasks import TaskSpec, get_task, register, registry, task_names
from lmforge.tasks.classification import ClassificationSpec


def test_builtin_tasks_are_registered():
    assert task_names() == ["generation", "text-classification", "token-classification"]
    assert get_task("generation").decoder and not get_task("text-classification").decoder


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(UserError, match="unknown task 'sentiment'; known tasks: generation, text-classification, token-classification"):
        get_task("sentiment")
    with pytest.raises(ConfigError, match=r"task: .*'sentiment' is not a task; choose one of generation, text-classification"):
        config_from_dict({"task": "sentiment"}, "c.yaml")


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="registered already"):
        register(ClassificationSpec())
    with pytest.raises(ValueError, match="needs a name"):
        register(TaskSpec())


class _IntentSpec(ClassificationSpec):
    """A plug-in: a classification variant under its own name."""

    name = "intent-detection"
    data_keys = ("text_field", "label_field")


@pytest.fixture
def plugin(monkeypatch):
    """Register a task through the `lmforge.tasks` entry-point group, as another package would."""

    class Point:
        name = "intent"

        def load(self):
            register(_IntentSpec())

    monkeypatch.setattr(registry, "entry_points", lambda group: [Point()] if group == "lmforge.tasks" else [])
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    yield
    registry._REGISTRY.pop("intent-detection", None)


def test_entry_point_plugins_register_tasks(plugin):
    assert "intent-detection" in task_names()
    cfg = config_from_dict({"task": "intent-detection", "data": {"label_field": "intent"}}, "c.yaml")
    assert cfg.task == "intent-detection" and cfg.training.learning_rate == 1e-4
    # keys only other tasks use are hidden from its starter config
    assert {"multi_label", "text_pair_field", "scheme", "prompt_field"} <= hidden_data_keys("intent-detection")


def test_specs_check_their_own_config_keys():
    with pytest.raises(ConfigError, match="data.multi_label: not available for token-classification"):
        config_from_dict({"task": "token-classification", "data": {"multi_label": True}}, "c.yaml")
    with pytest.raises(ConfigError, match="training.logit_adjustment: only for single-label text-classification"):
        config_from_dict({"task": "generation", "training": {"logit_adjustment": 1.0}}, "c.yaml")
    gen = config_from_dict({"task": "generation"}, "c.yaml")
    assert (gen.method, gen.data.max_length, gen.training.learning_rate) == ("lora", 512, 2e-4)


def test_report_styles_come_from_the_tasks():
    cls = config_from_dict({"task": "text-classification"}, "c.yaml")
    multi = config_from_dict({"task": "text-classification", "data": {"multi_label": True}}, "c.yaml")
    ner = config_from_dict({"task": "token-classification"}, "c.yaml")
    assert get_task("text-classification").report_style(cls).kind == "text-classification"
    assert get_task("text-classification").report_style(multi).binary_calibration
    assert get_task("token-classification").report_style(ner).entity_plot
    assert get_task("text-classification").dev_metrics(multi)[0] == "average_precision"
