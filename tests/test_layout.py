"""dvc.yaml against the code: every stage declares the paths stages/paths.py says it writes and reads, and the
code it runs; no stage module imports another."""
import ast
import re
from pathlib import Path

import pytest

from stages import kinds, paths
from stages.config import ROOT, load_params

# Modules whose edits do not change any number: params loading, errors, atomic I/O, MLflow and the model it logs,
# the path names, the kind lookup. A stage need not declare them, so that editing them does not re-run the
# pipeline (dvc.yaml says so).
PLUMBING = {"config", "loader", "errors", "files", "store", "tracking", "serving", "paths", "kinds"}
# What these import serves only what MLflow logs (the served model), never a DVC output: not followed.
NOT_FOLLOWED = {"store", "tracking", "serving"}


@pytest.fixture(scope="module")
def stages():
    """Every stage of dvc.yaml as DVC expands it (foreach over params.yaml), by name."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {s.addressing: s for s in repo.index.stages}


def stage_module(stage) -> str:
    return re.match(r"python -m stages\.(\w+)", stage.cmd).group(1)


def imported_modules(name: str) -> set[str]:
    """stages.* modules imported anywhere in stages/<name>.py, function-level imports included."""
    tree = ast.parse((ROOT / "stages" / f"{name}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "stages":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stages."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("stages.")}
    return found


def code_closure(name: str) -> set[str]:
    """The module and every stages module it imports, directly or through others; stages/__init__.py's imports
    (the CPU kernel pins) come with every module of the package."""
    seen, todo = set(), [name, *imported_modules("__init__")]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += [] if module in NOT_FOLLOWED else imported_modules(module)
    return seen


def test_no_stage_module_imports_another(stages):
    stage_modules = {stage_module(s) for s in stages.values()}
    for name in stage_modules:
        assert not imported_modules(name) & stage_modules, f"stages/{name}.py imports a stage module"


def kind_roles(name: str) -> set[str]:
    """The roles stages/<name>.py asks stages/kinds.py for: the string literals of its kinds.code(kind, "<role>")."""
    tree = ast.parse((ROOT / "stages" / f"{name}.py").read_text())
    return {node.args[1].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "code"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "kinds"
            and isinstance(node.args[1], ast.Constant)}


def stage_kind(address: str, params) -> str | None:
    """The kind of the task a stage instance works on (None for check)."""
    group, _, task = address.partition("@")
    if group in ("scratch", "extract", "finetune"):
        return params.transfer.kind
    return params.task(task).kind if task else None


def needed_code(address: str, stage, params) -> set[str]:
    """stages/*.py files a stage instance runs: its module and the kind modules it asks for, with their imports."""
    module, kind = stage_module(stage), stage_kind(address, params)
    code = code_closure(module)
    for role in kind_roles(module):
        code |= code_closure(kinds.module_name(kind, role).split(".")[1])
    return {f"stages/{m}.py" for m in code - PLUMBING} | {f"stages/{module}.py"}


KIND_FILE = re.compile(r"stages/(" + "|".join(kinds.KINDS) + r")((?:_\w+)?)\.py")


def file_kind(file: str) -> str | None:
    """The kind a stages/<kind>[_<role>].py file belongs to, else None."""
    match = KIND_FILE.fullmatch(file)
    return match.group(1) if match else None


def as_template(files: set[str], kind: str | None) -> set[str]:
    """The kind's own modules written as stages/{kind}[_<role>].py: what dvc.yaml templates from the task's kind."""
    return {KIND_FILE.sub(r"stages/{kind}\2.py", f) if kind and file_kind(f) == kind else f for f in files}


def test_every_stage_declares_the_code_it_runs(stages):
    """Each stage declares exactly the code of one template per stage (foreach) group: what its module runs, its
    kind's modules for the roles it asks stages/kinds.py for, and what those import; the template is the union
    over the group's kinds (an images plot draws augmented images, so every plot declares <kind>_train.py)."""
    params = load_params()
    templates = {}
    for address, stage in stages.items():
        group = address.partition("@")[0]
        templates.setdefault(group, set()).update(as_template(needed_code(address, stage, params),
                                                              stage_kind(address, params)))
    for address, stage in stages.items():
        declared = {d.def_path for d in stage.deps if d.def_path.startswith("stages/")}
        kind = stage_kind(address, params)
        needed = {f.replace("{kind}", kind or "") for f in templates[address.partition("@")[0]]}
        assert needed_code(address, stage, params) <= needed
        assert declared == needed, f"{address}: missing {sorted(needed - declared)}, extra {sorted(declared - needed)}"


def test_a_stage_runs_only_its_own_kinds_code(stages):
    params = load_params()
    for address, stage in stages.items():
        kind = stage_kind(address, params)
        if kind is None:  # check: it judges every task's params (a series' windows against its length)
            continue
        others = {file_kind(d.def_path) for d in stage.deps} - {None, kind}
        assert not others, f"{address} ({kind}) declares code of {others}"


def expected_files(address: str, models: dict[str, list[str]]) -> dict[str, set[Path]]:
    """What each stage must declare, from stages/paths.py: outs, metrics, plots and data deps."""
    stage, _, item = address.partition("@")
    if stage == "check":
        return {"outs": {paths.params_checked()}, "data": set()}  # params.yaml, its one input, is left out above
    if stage in ("scratch", "extract", "finetune"):
        data = {paths.prepared("transfer")} | {"scratch": set(), "extract": {paths.checkpoint("digits", "cnn")},
                                               "finetune": {paths.checkpoint("transfer", "extract")}}[stage]
        return {"outs": {paths.checkpoint("transfer", stage), paths.history("transfer", stage)}, "data": data}
    task, model = item, models[item][0]
    return {
        "download": {"outs": {paths.raw(task)}, "data": {paths.params_checked()}},
        "preprocess": {"outs": {paths.prepared(task)}, "data": {paths.raw(task)}},
        "baseline": {"outs": {paths.baseline_metrics(task), paths.baseline_predictions(task)},
                     "data": {paths.prepared(task)}},
        "train": {"outs": {paths.checkpoints(task), paths.histories(task)}, "data": {paths.prepared(task)}},
        "evaluate": {"outs": {paths.model_metrics(task, model).parent, paths.predictions(task, model).parent},
                     "data": {paths.prepared(task), paths.checkpoints(task)}},
        "generate": {"outs": {paths.samples(task)}, "data": {paths.prepared(task), paths.checkpoints(task),
                                                              paths.interpolated_metrics(task)}},
        "interpolate": {"outs": {paths.interpolated_metrics(task), paths.mixture_predictions(task), paths.mixtures_logged(task)},
                        "data": {paths.prepared(task), paths.checkpoints(task)}},
        "plot": {"outs": {paths.figures(task), paths.report(task)}, "metrics": {paths.summary(task)},
                 "data": {paths.prepared(task), Path("metrics") / task, Path("plots") / task}},
        "log": {"outs": {paths.logged(task)}, "data": {paths.checkpoints(task), Path("metrics") / task, paths.summary(task),
                                                        Path("plots") / task, paths.figures(task), paths.report(task)}},
    }[stage]


def test_every_stage_declares_the_paths_its_code_uses(stages):
    params = load_params()
    models = {task: params.trained_models(task) for task in params.tasks}
    assert stages, "dvc.yaml expanded to no stages"
    for address, stage in stages.items():
        declared = {"outs": {Path(o.def_path) for o in stage.outs if not o.metric and not o.plot},
                    "metrics": {Path(o.def_path) for o in stage.outs if o.metric},
                    "plots": {Path(o.def_path) for o in stage.outs if o.plot},
                    "data": {Path(d.def_path) for d in stage.deps
                             if not d.def_path.startswith("stages/") and d.def_path != "params.yaml"}}
        expected = {"outs": set(), "metrics": set(), "plots": set()} | expected_files(address, models)
        assert declared == expected, address


def test_the_plots_section_draws_every_trained_model():
    """dvc.yaml's top-level plots: every model's train and validation loss, every forecaster's test forecasts beside
    the actual values, a confusion matrix per classifier; no plot reads a file that is not a stage's output."""
    import yaml

    params = load_params()
    declared = {}  # file -> fields drawn from it
    for plot in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]:
        if isinstance(plot, dict):
            ((_, props),) = plot.items()
            for file, fields in props["y"].items():
                declared.setdefault(Path(file), set()).update([fields] if isinstance(fields, str) else fields)
    for task in params.tasks:
        kind = params.task(task).kind
        for model in params.trained_models(task):
            assert {"train_loss", "val_loss"} <= declared.get(paths.history(task, model), set()), (task, model)
            if kind != "text":  # next words: 2,000 classes, no confusion matrix; the perplexity bars are in the PNGs
                assert "predicted" in declared.get(paths.predictions(task, model), set()), (task, model)
        if kind == "series":
            assert "actual" in declared[paths.baseline_predictions(task)]
    outputs = _stage_outputs()
    for file in declared:
        assert any(file == o or o in file.parents for o in outputs), f"{file} is not a stage output"


def _stage_outputs() -> set[Path]:
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {Path(o.def_path) for s in repo.index.stages for o in s.outs}
