"""dvc.yaml against the code: every stage declares the paths stages/infra/paths.py says it writes and reads, and the
code it runs; no stage module imports another."""
import ast
import re
from pathlib import Path

import pytest

from stages import kinds
from stages.infra import paths
from stages.infra.config import ROOT, load_params


# The plumbing: stages/infra/ (params loading, errors, atomic I/O, MLflow and the model it logs, the path names)
# and the packages' __init__.py (the kind lookup). Its edits change no number, so no stage declares it and its
# imports are not followed (what store, tracking and serving import serves only MLflow, never a DVC output).
def is_plumbing(file: str) -> bool:
    return file.startswith("stages/infra/") or file.endswith("/__init__.py")


@pytest.fixture(scope="module")
def stages():
    """Every stage of dvc.yaml as DVC expands it (foreach over params.yaml), by name."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {s.addressing: s for s in repo.index.stages}


def stage_module(stage) -> str:
    return re.match(r"python -m stages\.(\w+)", stage.cmd).group(1)


def module_file(dotted: str) -> str | None:
    """stages/a/b.py or stages/a/b/__init__.py for the dotted module stages.a.b, if it is a file of the package."""
    path = Path(*dotted.split("."))
    for file in (path.with_suffix(".py"), path / "__init__.py"):
        if (ROOT / file).is_file():
            return file.as_posix()
    return None


def imported_modules(file: str) -> set[str]:
    """The stages/ files imported anywhere in `file`, function-level imports included: `from stages.a import b`
    is stages/a/b.py where that is a module, else stages/a.py (or its package's __init__.py)."""
    tree = ast.parse((ROOT / file).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "stages":
            for alias in node.names:
                found.add(module_file(f"{node.module}.{alias.name}") or module_file(node.module))
        elif isinstance(node, ast.Import):
            found |= {module_file(a.name) for a in node.names if a.name.split(".")[0] == "stages"}
    return found - {None}


def code_closure(file: str) -> set[str]:
    """The file and every stages/ file it imports, directly or through others, up to the plumbing;
    stages/__init__.py's imports (the CPU kernel pins) come with every module of the package."""
    seen, todo = set(), [file, *imported_modules("stages/__init__.py")]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += [] if is_plumbing(module) else imported_modules(module)
    return seen


def test_the_top_of_stages_holds_the_stage_entry_points_alone(stages):
    """ls stages/*.py is dvc.yaml's commands: every other module sits in core/, kinds/<kind>/ or infra/."""
    import yaml

    top = {p.stem for p in (ROOT / "stages").glob("*.py")} - {"__init__"}
    definitions = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values()  # copy has no instance here
    assert top == {re.match(r"python -m stages\.(\w+)", d.get("do", d)["cmd"]).group(1) for d in definitions}
    assert {p.name for p in (ROOT / "stages").iterdir() if p.is_dir() and p.name != "__pycache__"} == {"core", "infra", "kinds"}
    for kind in kinds.KINDS:  # DVC cannot interpolate a list into deps: every kind has the same role files
        assert {p.stem for p in (ROOT / "stages" / "kinds" / kind).glob("*.py")} - {"__init__"} == set(kinds.ROLES), kind


def test_no_stage_module_imports_another(stages):
    stage_modules = {stage_module(s) for s in stages.values()}
    for name in stage_modules:
        imported = {Path(f).stem for f in imported_modules(f"stages/{name}.py") if f.count("/") == 1}
        assert not imported & stage_modules, f"stages/{name}.py imports a stage module"


def kind_roles(name: str) -> set[str]:
    """The roles stages/<name>.py asks stages/kinds/__init__.py for: the string literals of its kinds.code(kind, "<role>")."""
    tree = ast.parse((ROOT / "stages" / f"{name}.py").read_text())
    return {node.args[1].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "code"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "kinds"
            and isinstance(node.args[1], ast.Constant)}


def stage_kind(address: str, params) -> str | None:
    """The kind of the task a stage instance works on (None for check)."""
    group, _, task = address.partition("@")
    if group in ("download", "copy"):  # a task's raw data: no kind's code
        return None
    return params.task(task).kind if task else None


def needed_code(address: str, stage, params) -> set[str]:
    """stages/ files a stage instance runs: its module and the kind modules it asks for, with their imports, less
    the plumbing."""
    module, kind = stage_module(stage), stage_kind(address, params)
    code = code_closure(f"stages/{module}.py")
    for role in kind_roles(module):
        code |= code_closure(module_file(kinds.module_name(kind, role)))
    return {f for f in code if not is_plumbing(f)}


KIND_FILE = re.compile(r"stages/kinds/(" + "|".join(kinds.KINDS) + r")/(\w+)\.py")


def file_kind(file: str) -> str | None:
    """The kind a stages/kinds/<kind>/<role>.py file belongs to, else None."""
    match = KIND_FILE.fullmatch(file)
    return match.group(1) if match else None


def as_template(files: set[str], kind: str | None) -> set[str]:
    """The kind's own modules written as stages/kinds/{kind}/<role>.py: what dvc.yaml templates from the task's kind."""
    return {KIND_FILE.sub(r"stages/kinds/{kind}/\2.py", f) if kind and file_kind(f) == kind else f for f in files}


def test_every_stage_declares_the_code_it_runs(stages):
    """Each stage declares exactly the code of one template per stage (foreach) group: what its module runs, its
    kind's modules for the roles it asks stages/kinds/__init__.py for, and what those import; the template is the union
    over the group's kinds (an images plot draws augmented images, so every plot declares kinds/<kind>/train.py)."""
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
        assert declared == needed, f"{address}: missing {sorted(needed - declared)}, extra {sorted(declared - needed)}"


def test_the_copy_stage_declares_the_code_it_runs():
    """copy@<task> exists only for a task with a path source (none in this repository's params): its template."""
    import yaml

    copy = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["copy"]["do"]
    declared = {d for d in copy["deps"] if d.startswith("stages/")}
    assert declared == {f for f in code_closure("stages/copy.py") if not is_plumbing(f)}
    assert "${item}" in copy["deps"] and copy["outs"] == [{"data/raw/${key}": {"persist": True}}]


def test_a_stage_runs_only_its_own_kinds_code(stages):
    params = load_params()
    for address, stage in stages.items():
        kind = stage_kind(address, params)
        if kind is None:  # check: it judges every task's params (a series' windows against its length)
            continue
        others = {file_kind(d.def_path) for d in stage.deps} - {None, kind}
        assert not others, f"{address} ({kind}) declares code of {others}"


def expected_files(address: str, models: dict[str, list[str]]) -> dict[str, set[Path]]:
    """What each stage must declare, from stages/infra/paths.py: outs, metrics, plots and data deps."""
    stage, _, item = address.partition("@")
    if stage == "check":
        return {"outs": {paths.params_checked()}, "data": set()}  # params.yaml, its one input, is left out above
    task, model = item, models[item][0]
    if stage in ("scratch", "extract", "finetune"):  # a transfer task's phases
        pretrained = paths.checkpoint(load_params().transfer_tasks[task], "cnn")
        data = {paths.prepared(task)} | {"scratch": set(), "extract": {pretrained},
                                         "finetune": {paths.checkpoint(task, "extract")}}[stage]
        return {"outs": {paths.checkpoint(task, stage), paths.history(task, stage)}, "data": data}
    if stage == "copy":  # the task's own file or folder, which `dvc add` tracks
        return {"outs": {paths.raw(task)}, "data": {paths.params_checked(), Path(load_params().sources.path[task])}}
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
                 "plots": {paths.compare_curves(task), paths.compare_test(task)},
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


def test_every_task_draws_its_curves_and_test_predictions_in_dvc_plots(stages):
    """Each plot stage declares its task's two interactive plots (a task of your own gets them with no dvc.yaml
    line): the learning curves of every model, and the test split by the kind's template, which exists."""
    params = load_params()
    for task in params.tasks:
        declared = {Path(o.def_path): o.plot for o in stages[f"plot@{task}"].outs if o.plot}
        assert declared[paths.compare_curves(task)]["template"] == "curves"
        template = declared[paths.compare_test(task)]["template"]
        assert template == f"{params.task(task).kind}_test" and (ROOT / ".dvc" / "plots" / f"{template}.json").is_file()
    assert (ROOT / ".dvc" / "plots" / "curves.json").is_file()


def _stage_outputs() -> set[Path]:
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {Path(o.def_path) for s in repo.index.stages for o in s.outs}


def test_no_task_name_in_the_code_outside_the_registry_of_bundled_sources():
    """A task is data: its name lives in params.yaml (and dvc.yaml's one line per task), never in stages/. The one
    exception is stages/core/sources.py, the bundled data sets; "text" is also a kind's name, so it is allowed."""
    # a built-in task's name as a word ("transfer", "text" and "temperature" are also a stage, a kind and the
    # sampling temperature: as the start of a key path only)
    words_of_tasks = {"passengers", "digits", "flowers"}
    key_path = re.compile(r"\b(passengers|temperature|digits|flowers|transfer|text)\.[a-z]")
    formats = {"uci_digits", "digits.csv.gz"}  # an images format, and scikit-learn's file it reads
    found = []
    for file in (ROOT / "stages").rglob("*.py"):
        if file == ROOT / "stages" / "core" / "sources.py":
            continue
        tree = ast.parse(file.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
                      and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                words = set(re.findall(r"[A-Za-z]+", node.value.replace("_", " "))) if node.value not in formats else set()
                if node.value not in formats and (words & words_of_tasks or key_path.search(node.value)):
                    found.append(f"{file.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, found
