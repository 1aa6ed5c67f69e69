"""The one lookup from a task's kind (its config class's `kind`) to the module that handles that kind of data.

Each kind module has the same functions, which the stages call without asking which kind it is:
  prepare(task, cfg) -> (arrays, meta)              preprocess: raw files -> splits as arrays, and meta.json
  baselines(data, meta, cfg) -> (metrics, columns)  baseline: the classical predictors, scored on the test split
  augmenter(task_cfg, meta) -> augment or None      train: the random transform of training batches, if any
  tensors(data, meta, split) -> (x, y)              train, evaluate: one split as CPU tensors
  score(model, data, meta, device) -> (metrics, columns)   evaluate: test metrics and per-example predictions
  figures(results, data, meta, task_cfg, seed) -> {file name: figure}   plot: the kind's own figures
  HEADLINE, LOWER_IS_BETTER                         plot: the test metric `dvc exp show` lists (metrics/summary)
  serving(data, meta, task_cfg) -> (spec, example)  train: the settings the logged model needs, an input example
  serve(model, inputs, spec) -> outputs             the logged MLflow model (stages/serving.py): real in, real out
"""
from types import ModuleType

from stages import images, series, text

KINDS = {"series": series, "images": images, "text": text}


def of(task_cfg) -> ModuleType:
    return KINDS[task_cfg.kind]
