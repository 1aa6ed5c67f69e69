"""The one lookup from a task's kind (series, images, text) and a stage's role to the module that does that work.

Each kind's code is split by the stage that runs it, so that a stage runs (and dvc.yaml declares) only its own
kind's code for its own role, and an edit re-runs only the stages it can change:
  stages/<kind>.py            data: prepare(task, cfg) -> (arrays, meta) for preprocess; tensors(data, meta,
                              split) -> (x, y) for train and evaluate; the functions the kind's other modules share
  stages/<kind>_baselines.py  baselines(data, meta, cfg) -> (metrics, columns): the classical predictors (baseline)
  stages/<kind>_train.py      augmenter(task_cfg, meta) -> augment or None; model_inputs(name, config, data,
                              meta, task_cfg) -> (config, {split: (x, y)} or {} for the shared tensors);
                              serving(data, meta, task_cfg) -> (spec, input example): what train adds to the
                              shared loop
  stages/<kind>_predict.py    score(model, data, meta, device) -> (metrics, columns) for evaluate; serve(model,
                              inputs, spec) -> outputs for the logged MLflow model (stages/serving.py)
  stages/<kind>_figures.py    figures(results, data, meta, task_cfg, seed) -> {file name: figure}; HEADLINE,
                              LOWER_IS_BETTER: the test metric metrics/summary/<task>.json lists (plot)
Modules are imported on first use, so a stage loads one kind's code. tests/test_layout.py reads the roles each
stage module asks for here (the string literals of its `kinds.code` calls) and holds dvc.yaml's deps to them.
"""
import importlib
from types import ModuleType

KINDS = ("series", "images", "text")
ROLES = ("data", "baselines", "train", "predict", "figures")


def module_name(kind: str, role: str) -> str:
    return f"stages.{kind}" if role == "data" else f"stages.{kind}_{role}"


def code(kind: str, role: str) -> ModuleType:
    """The module of `kind` for `role` (see above)."""
    if kind not in KINDS or role not in ROLES:
        raise ValueError(f"no {role!r} code for kind {kind!r} (kinds: {', '.join(KINDS)}; roles: {', '.join(ROLES)})")
    return importlib.import_module(module_name(kind, role))
