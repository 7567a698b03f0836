"""Config loading: overrides, unknown keys, all problems at once, method-dependent defaults."""

import pytest

from lmforge.cli import without_option
from lmforge.config import ProjectConfig, apply_overrides, config_from_dict, load_config
from lmforge.errors import ConfigError


def test_all_problems_reported_together_with_keys():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"trainig": {}, "task": "x", "training": {"epochs": 0, "lr": 1}})
    msg = str(err.value)
    for key in ("trainig: unknown key", "task:", "training.epochs", "training.lr: unknown key"):
        assert key in msg
    assert "learning_rate" in msg  # the known keys are listed next to an unknown one


def test_overrides_parse_yaml_values_and_create_sections():
    raw = apply_overrides({}, ["training.learning_rate=3e-5", "data.multi_label=true", "data.label_map={a: b}", "name=x"])
    assert raw == {"training": {"learning_rate": 3e-5}, "data": {"multi_label": True, "label_map": {"a": "b"}}, "name": "x"}
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["training.epochs"])


def test_learning_rate_default_depends_on_method():
    assert config_from_dict({"method": "full"}).training.learning_rate == 1e-4
    assert config_from_dict({"method": "lora"}).training.learning_rate == 1e-3
    assert config_from_dict({"method": "lora", "training": {"learning_rate": 1e-3}}).training.learning_rate == 1e-3


def test_batch_size_default_depends_on_task_and_an_explicit_value_wins(tmp_path):
    ner = {"task": "token-classification", "data": {"train": "t.conll"}}
    assert config_from_dict(ner).training.batch_size == 16  # packed documents, at NER's own learning rate
    assert config_from_dict(ner).training.learning_rate == 2e-4
    assert config_from_dict({**ner, "training": {"batch_size": 8}}).training.batch_size == 8
    assert config_from_dict({"task": "text-classification"}).training.batch_size == 16
    (tmp_path / "c.yaml").write_text("task: token-classification\ndata: {train: t.conll}\n")
    assert load_config(tmp_path / "c.yaml", ["training.batch_size=4"]).training.batch_size == 4
    assert load_config(tmp_path / "c.yaml").training.batch_size == 16


def test_incompatible_settings_rejected():
    with pytest.raises(ConfigError, match="label_delimiter"):
        config_from_dict({"data": {"label_delimiter": "|"}})
    with pytest.raises(ConfigError, match="token-classification"):
        config_from_dict({"task": "token-classification", "data": {"multi_label": True}})
    with pytest.raises(ConfigError, match="training.logit_adjustment: only for single-label"):
        config_from_dict({"data": {"multi_label": True}, "training": {"logit_adjustment": 1.0}})


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_starter_config_round_trips(tmp_path):
    from lmforge.starter import render

    cfg = config_from_dict({"name": "demo", "task": "token-classification"})
    path = tmp_path / "c.yaml"
    path.write_text(render(cfg, "lmforge train c.yaml"))
    assert load_config(path) == cfg
    assert path.read_text().count("\n# ") + path.read_text().count("  # ") >= len(ProjectConfig.model_fields)


def test_without_option():
    assert without_option(["train", "c.yaml", "--nproc", "2", "--max-steps", "2"], "--nproc") == ["train", "c.yaml", "--max-steps", "2"]
    assert without_option(["train", "--nproc=2", "x=2"], "--nproc") == ["train", "x=2"]


def test_own_checks_read_as_plain_sentences():
    """Our validators' messages appear as written: no pydantic "Value error," prefix, no "(top level)"."""
    with pytest.raises(ConfigError) as err:
        config_from_dict({"task": "sentiment"}, "c.yaml")
    assert "  - task: 'sentiment' is not a task; choose one of generation" in str(err.value)
    with pytest.raises(ConfigError) as err:
        config_from_dict({"task": "token-classification", "data": {"multi_label": True}}, "c.yaml")
    message = str(err.value)
    assert "  - data.multi_label: not available for token-classification" in message
    assert "Value error" not in message and "(top level)" not in message
