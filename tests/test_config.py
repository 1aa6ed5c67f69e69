"""params.yaml loading: the real file loads; unknown, missing and impossible values name their key."""
import re
from dataclasses import asdict

import pytest
import yaml

from stages.config import ROOT, load_params
from stages.errors import PipelineError


@pytest.fixture
def raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def load(tmp_path, raw):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_params(path)


def test_the_repository_params_load():
    params = load_params()
    with open("params.yaml") as f:
        raw = yaml.safe_load(f)
    assert asdict(params.passengers.train) == raw["passengers"]["train"]  # every key read, under its own name
    assert set(params.runs) <= set(params.tasks) and all(params.tasks[t] == run.kind for t, run in params.runs.items())


def test_unknown_key_is_an_error(tmp_path, raw):
    raw["passengers"]["train"]["learning_rate"] = 0.1
    with pytest.raises(PipelineError, match=r"unknown key passengers\.train\.learning_rate"):
        load(tmp_path, raw)


def test_missing_key_is_an_error(tmp_path, raw):
    del raw["temperature"]["preprocess"]["horizon"]
    with pytest.raises(PipelineError, match=r"missing key temperature\.preprocess\.horizon"):
        load(tmp_path, raw)


@pytest.mark.parametrize("value", [0, -0.01])
def test_non_positive_lr_names_the_param(tmp_path, raw, value):
    raw["passengers"]["train"]["lr"] = value
    with pytest.raises(PipelineError, match=r"passengers\.train\.lr must be > 0"):
        load(tmp_path, raw)


def test_wrong_type_names_the_param(tmp_path, raw):
    raw["passengers"]["preprocess"]["seq_length"] = "twelve"
    with pytest.raises(PipelineError, match=r"passengers\.preprocess\.seq_length must be int"):
        load(tmp_path, raw)


def test_unknown_model_name_is_an_error(tmp_path, raw):
    raw["runs"]["passengers"]["models"].append("tcn")
    with pytest.raises(PipelineError, match=r"runs\.passengers\.models: unknown model 'tcn'"):
        load(tmp_path, raw)


def test_a_kind_that_is_not_the_tasks_is_an_error(tmp_path, raw):
    """dvc.yaml declares a stage's code from the kind: a wrong one would make DVC watch the wrong files."""
    raw["tasks"]["passengers"] = "images"
    with pytest.raises(PipelineError, match=r"tasks\.passengers must be series"):
        load(tmp_path, raw)
    raw["tasks"]["passengers"] = "series"
    raw["runs"]["digits"]["kind"] = "text"
    with pytest.raises(PipelineError, match=r"runs\.digits\.kind must be images"):
        load(tmp_path, raw)


def test_corrupt_yaml_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("passengers: [unclosed\n")
    with pytest.raises(PipelineError, match="params.yaml: not valid YAML"):
        load_params(path)


@pytest.mark.parametrize("backbone, source", [("vgg16", "bundled"), ("cnn", "url")])
def test_transfer_backbone_must_fit_the_data_source(tmp_path, raw, backbone, source):
    """The digits CNN reads the 1-channel bundled digits; the ImageNet networks read 3-channel CIFAR-10."""
    raw["transfer"]["model"]["backbone"], raw["transfer"]["download"]["source"] = backbone, source
    with pytest.raises(PipelineError, match=rf"transfer\.model\.backbone {backbone} does not fit download\.source {source}"):
        load(tmp_path, raw)


def test_every_param_says_what_it_is_in_a_comment():
    """params.yaml's comments are the reference for every knob (the README links to them): a key with a value
    and no comment is a param nobody can look up. Entries of runs and checksums are names, not knobs."""
    bare = [line.strip() for line in (ROOT / "params.yaml").read_text().splitlines()
            if re.match(r"^\s*[a-z_]+: [^#{\s]", line) and "#" not in line]
    assert not bare, f"params.yaml: these keys have no comment: {bare}"


def test_params_yaml_is_kept_in_the_form_dvc_writes_back(tmp_path):
    """`dvc exp run -S` rewrites params.yaml through DVC's YAML writer; in that form a one-value change is a
    one-line diff, not a reformatted file."""
    from dvc.utils.serialize import modify_yaml

    original = (ROOT / "params.yaml").read_text()
    path = tmp_path / "params.yaml"
    path.write_text(original)
    with modify_yaml(path):
        pass
    assert path.read_text() == original, "params.yaml changes when DVC writes it back: rewrite it in DVC's form"
    with modify_yaml(path) as params:
        params["passengers"]["train"]["lr"] = 0.005
    changed = [(a, b) for a, b in zip(original.splitlines(), path.read_text().splitlines()) if a != b]
    assert len(changed) == 1 and "lr: 0.005" in changed[0][1]


@pytest.mark.parametrize("key, value, message", [
    ("digits.preprocess.val_ratio", 0.8, r"digits\.preprocess\.val_ratio \+ test_ratio must be < 1"),
    ("passengers.preprocess.test_ratio", 0.95, r"passengers\.preprocess\.val_ratio \+ test_ratio must be < 1"),
    ("text.preprocess.val_ratio", 0, r"text\.preprocess\.val_ratio must be in \(0, 1\), got 0"),
    ("digits.train.augment.crop_scale", [0.9, 0.5], r"crop_scale must be \[min, max\], 0 < min <= max <= 1, got \[0\.9, 0\.5\]"),
    ("runs.passengers.models", ["lstm", "lstm"], r"runs\.passengers\.models must list each model once"),
])
def test_a_rule_declared_on_a_field_names_the_key_and_the_value(tmp_path, raw, key, value, message):
    """The rules live in the fields' annotations (stages/loader.py Rule); a split's parts must leave a training part."""
    set_key(raw, key, value)
    with pytest.raises(PipelineError, match=message):
        load(tmp_path, raw)


@pytest.mark.parametrize("key, value, message", [
    ("digits.train.augment.rotation", -5, r"digits\.train\.augment\.rotation must be in \[0, 180\]"),
    ("text.preprocess.max_vocab", -1, r"text\.preprocess\.max_vocab must be >= 0"),
    ("seed", -1, r"seed must be in \[0, 2\*\*32 - 3\]"),
])
def test_a_value_that_would_be_reinterpreted_is_refused(tmp_path, raw, key, value, message):
    """Values that once acted as something else (a negative rotation as a positive one, a negative vocabulary
    cap as none, a negative seed as a traceback in NumPy)."""
    set_key(raw, key, value)
    with pytest.raises(PipelineError, match=message):
        load(tmp_path, raw)


@pytest.mark.parametrize("key, value, message", [
    ("text.model.tie_embeddings", True, r"text\.model\.tie_embeddings needs embedding_dim = hidden_size, got 32"),
    ("text.baseline.kn_orders", [2, 5], r"text\.baseline\.kn_orders: order 5 needs contexts of 4 words"),
    ("text.baseline.kn_orders", [1], r"text\.baseline\.kn_orders must be a non-empty list of orders >= 2"),
    ("text.interpolate.weights", [0.5, 1.5], r"text\.interpolate\.weights must be a non-empty list of weights"),
])
def test_text_model_and_baseline_settings_that_cannot_work_are_refused(tmp_path, raw, key, value, message):
    raw["text"]["model"]["embedding_dim"], raw["text"]["preprocess"]["max_len"] = 32, 3
    set_key(raw, key, value)
    with pytest.raises(PipelineError, match=message):
        load(tmp_path, raw)


def test_a_float_written_1e_3_is_the_number_meant(tmp_path, raw):
    raw["passengers"]["train"]["lr"] = "1e-3"  # what PyYAML (YAML 1.1) hands over for `lr: 1e-3`
    assert load(tmp_path, raw).passengers.train.lr == 0.001
    raw["passengers"]["train"]["lr"] = "fast"
    with pytest.raises(PipelineError, match=r"passengers\.train\.lr must be float, got 'fast'"):
        load(tmp_path, raw)


def test_a_duplicate_key_is_an_error_naming_its_line(tmp_path):
    text = (ROOT / "params.yaml").read_text().replace("    lr: 0.01 ", "    lr: 0.01\n    lr: 0.02 ", 1)
    (tmp_path / "params.yaml").write_text(text)
    line = text.splitlines().index("    lr: 0.02 " + text.split("    lr: 0.02 ", 1)[1].splitlines()[0]) + 1
    with pytest.raises(PipelineError, match=rf"not valid YAML \(duplicate key 'lr', line {line}\)"):
        load_params(tmp_path / "params.yaml")


def test_an_empty_params_file_says_so(tmp_path):
    (tmp_path / "params.yaml").write_text("")
    with pytest.raises(PipelineError, match=r"params\.yaml: the file is empty"):
        load_params(tmp_path / "params.yaml")


def test_a_top_level_stage_key_says_keys_are_task_first(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text()) | {"train": {"lr": 0.01}}  # `dvc exp run -S +train.lr=0.01`
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(PipelineError, match=r"unknown top-level key train: keys are task-first, <task>\.train\.<key> "
                                            r"\(e\.g\. passengers\.train.*tasks: passengers, temperature"):
        load_params(tmp_path / "params.yaml")


def set_key(raw: dict, key: str, value) -> None:
    """raw["a"]["b"]["c"] = value for key "a.b.c"."""
    *parents, leaf = key.split(".")
    for parent in parents:
        raw = raw[parent]
    raw[leaf] = value
