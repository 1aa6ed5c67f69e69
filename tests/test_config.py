"""params.yaml loading: the real file loads; unknown, missing and impossible values name their key."""
import copy
import re
from dataclasses import asdict

import pytest
import yaml

from stages.infra.config import ROOT, load_params
from stages.infra.errors import PipelineError


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
    assert asdict(params.task("passengers").train) == raw["passengers"]["train"]  # every key read, under its own name
    assert set(params.runs) <= set(params.tasks) and all(params.tasks[t] == kind for t, kind in params.runs.items())
    assert params.sources.download.keys() | params.sources.path.keys() == params.tasks.keys()


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
    raw["passengers"]["models"].append("tcn")
    with pytest.raises(PipelineError, match=r"passengers\.models: unknown model 'tcn' for a series task"):
        load(tmp_path, raw)


def test_a_kind_that_is_not_the_tasks_is_an_error(tmp_path, raw):
    """dvc.yaml declares a stage's code from the kind: a wrong one would make DVC watch the wrong files."""
    raw["tasks"]["passengers"] = "graphs"
    with pytest.raises(PipelineError, match=r"tasks\.passengers must be series, images or text"):
        load(tmp_path, raw)
    raw["tasks"]["passengers"] = "series"
    raw["runs"]["digits"] = "text"
    with pytest.raises(PipelineError, match=r"runs\.digits must be images, as in tasks"):
        load(tmp_path, raw)


def test_corrupt_yaml_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("passengers: [unclosed\n")
    with pytest.raises(PipelineError, match="params.yaml: not valid YAML"):
        load_params(path)


@pytest.mark.parametrize("pretrained", ["text", "passengers", "nowhere"])
def test_transfer_starts_from_an_images_task_that_trains_the_cnn(tmp_path, raw, pretrained):
    """transfer_tasks names the task whose cnn checkpoint extract starts from (dvc.yaml's extract reads it)."""
    raw["transfer_tasks"]["transfer"] = pretrained
    with pytest.raises(PipelineError, match=rf"transfer_tasks\.transfer: '{pretrained}' must be an images task "
                                            r"that trains the cnn model"):
        load(tmp_path, raw)
    raw["transfer_tasks"]["transfer"] = "digits"
    raw["digits"]["models"] = ["cnn2"]
    with pytest.raises(PipelineError, match=r"transfer_tasks\.transfer: 'digits' must be"):
        load(tmp_path, raw)
    raw["digits"]["models"] = ["cnn"]
    raw["transfer_tasks"] = {}
    with pytest.raises(PipelineError, match=r"transfer_tasks: transfer is missing"):
        load(tmp_path, raw)


def test_every_param_says_what_it_is_in_a_comment():
    """params.yaml's comments are the reference for every knob (the README links to them): a key with a value
    and no comment is a param nobody can look up. Entries of tasks, runs and sources (the comment above each map
    says what they are) and checksums are names, not knobs."""
    bare, section = [], None
    for line in (ROOT / "params.yaml").read_text().splitlines():
        section = line.split(":")[0] if re.match(r"^[a-z_]+:", line) else section
        if re.match(r"^\s*[a-z_]+: [^#{\s]", line) and "#" not in line and section not in ("tasks", "runs", "sources"):
            bare.append(line.strip())
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
    ("passengers.models", ["lstm", "lstm"], r"passengers\.models must list each model once"),
])
def test_a_rule_declared_on_a_field_names_the_key_and_the_value(tmp_path, raw, key, value, message):
    """The rules live in the fields' annotations (stages/infra/loader.py Rule); a split's parts must leave a training part."""
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
    assert load(tmp_path, raw).task("passengers").train.lr == 0.001
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
                                            r"\(-S <task>\.train\.<key>=<value>"):
        load_params(tmp_path / "params.yaml")


def with_a_task_of_your_own(raw: dict, name: str = "wine", path: str = "data/wine.csv") -> dict:
    """params.yaml with a new series task: passengers' section copied under another name, its data a file."""
    raw = copy.deepcopy(raw)
    raw["tasks"][name] = raw["runs"][name] = "series"
    raw["sources"]["path"] = {name: path}
    raw[name] = copy.deepcopy(raw["passengers"]) | {"models": ["lstm", "hybrid_gru"]}
    del raw[name]["download"]  # a path source downloads nothing
    raw[name]["preprocess"] |= {"time": "date", "value": "litres", "time_format": "auto", "frequency": "MS"}
    raw[name]["baseline"]["season"] = "auto"
    return raw


def test_a_task_of_your_own_is_a_section_under_any_name(tmp_path, raw):
    params = load(tmp_path, with_a_task_of_your_own(raw))
    wine = params.task("wine")
    assert wine.kind == "series" and wine.models == ("lstm", "hybrid_gru") and wine.download is None
    assert wine.baseline.season == 12  # auto: monthly steps, a yearly season
    assert params.sources.path == {"wine": "data/wine.csv"} and params.trained_models("wine") == ["lstm", "hybrid_gru"]


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("wine"), r"tasks\.wine: its section `wine:` is missing"),
    (lambda r: r["tasks"].pop("wine") and r["runs"].pop("wine"), r"unknown top-level key wine: not a task \(tasks: "
                                                                  r".*passengers.*\); add it to tasks"),
    (lambda r: r["runs"].pop("wine"), r"runs: wine is missing \(train@wine trains its models\)"),
    (lambda r: r["sources"]["path"].pop("wine"), r"sources: wine must be in exactly one of sources\.download and "
                                                 r"sources\.path"),
    (lambda r: r["sources"]["download"].update(wine="bundled"), r"sources: wine must be in exactly one"),
    (lambda r: r["sources"]["path"].update(wine="/etc/passwd"), r"sources\.path\.wine must be a path inside the "
                                                                r"repository"),
    (lambda r: r["sources"]["path"].update(wine="../wine.csv"), r"sources\.path\.wine must be a path inside"),
    (lambda r: r["sources"]["download"].update(temperature="ftp"), r"sources\.download\.temperature must be bundled or url"),
    (lambda r: r["wine"].update(download=r["passengers"]["download"]), r"wine\.download: a path source downloads "
                                                                       r"nothing; remove this section"),
    (lambda r: r["passengers"].pop("download"), r"passengers\.download: missing \(sources\.download names the task\)"),
    (lambda r: r["wine"]["preprocess"].update(frequency="5min"), r"wine\.baseline\.season auto: preprocess\.frequency "
                                                                 r"'5min' has no standard season"),
    (lambda r: r["wine"]["preprocess"].update(frequency="none", resample=True), r"wine\.preprocess\.resample needs a "
                                                                               r"frequency to resample to"),
    (lambda r: r["wine"]["preprocess"].pop("value"), r"missing key wine\.preprocess\.value"),
    (lambda r: r["tasks"].update(runs="series"), r"tasks\.runs: a task cannot be named runs"),
    (lambda r: r["transfer"].update(models=["extract", "scratch", "finetune"]), r"transfer\.models must be \['scratch', "
                                                                                r"'extract', 'finetune'\]"),
])
def test_a_wrong_declaration_of_a_task_names_the_key(tmp_path, raw, change, message):
    raw = with_a_task_of_your_own(raw)
    change(raw)
    with pytest.raises(PipelineError, match=message):
        load(tmp_path, raw)


def set_key(raw: dict, key: str, value) -> None:
    """raw["a"]["b"]["c"] = value for key "a.b.c"."""
    *parents, leaf = key.split(".")
    for parent in parents:
        raw = raw[parent]
    raw[leaf] = value
