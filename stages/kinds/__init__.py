"""Each kind's code, one folder per kind with the same role files, and the one lookup from (kind, role) to a module.

A stage runs (and dvc.yaml declares) only its own kind's code for its own role, so an edit re-runs only the stages
it can change. DVC cannot interpolate a list into deps, so every kind has the same files:
  stages/kinds/<kind>/prepare.py    prepare(task, cfg) -> (arrays, meta): the readers and splits, run by preprocess
                                    alone (a reader edit re-runs preprocess and what reads its output)
  stages/kinds/<kind>/data.py       tensors(data, meta, split) -> (x, y) for train and evaluate; the functions the
                                    kind's other roles share
  stages/kinds/<kind>/metrics.py    how predictions are scored (baseline, evaluate, plot): an edit re-scores and
                                    retrains nothing
  stages/kinds/<kind>/baselines.py  baselines(data, meta, cfg) -> (metrics, columns): the classical predictors (baseline)
  stages/kinds/<kind>/train.py      augmenter(task_cfg, meta) -> augment or None; model_inputs(name, config, data,
                                    meta, task_cfg) -> (config, {split: (x, y)} or {} for the shared tensors);
                                    serving(data, meta, task_cfg) -> (spec, input example): what train adds to the
                                    shared loop
  stages/kinds/<kind>/predict.py    score(model, data, meta, device) -> (metrics, columns) for evaluate; serve(model,
                                    inputs, spec) -> outputs for the logged MLflow model (stages/infra/serving.py)
  stages/kinds/<kind>/figures.py    figures(results, data, meta, task_cfg, seed) -> {file name: figure}; HEADLINE,
                                    LOWER_IS_BETTER: the test metric metrics/summary/<task>.json lists (plot)
Modules are imported on first use, so a stage loads one kind's code. tests/test_layout.py reads the roles each
stage module asks for here (the string literals of its `kinds.code` calls) and holds dvc.yaml's deps to them.
"""
import importlib
from types import ModuleType

KINDS = ("series", "images", "text")
ROLES = ("prepare", "data", "metrics", "baselines", "train", "predict", "figures")


def module_name(kind: str, role: str) -> str:
    return f"stages.kinds.{kind}.{role}"


def code(kind: str, role: str) -> ModuleType:
    """The module of `kind` for `role` (see above)."""
    if kind not in KINDS or role not in ROLES:
        raise ValueError(f"no {role!r} code for kind {kind!r} (kinds: {', '.join(KINDS)}; roles: {', '.join(ROLES)})")
    return importlib.import_module(module_name(kind, role))
