"""Stage plot: one task's figures (plots/figures/<task>/*.png), report (plots/reports/<task>.md) and headline
metrics (metrics/summary/<task>.json, what `dvc exp show` lists), models beside baselines.

Reads what baseline, train and evaluate wrote; the task's kind draws its own figures (stages/kinds/<kind>/figures.py,
through the stages/kinds lookup). The log stage adds the figures and the report to every model's MLflow run.
Usage: python -m stages.plot <task>
"""
from dataclasses import asdict
from pathlib import Path

import yaml

from stages import kinds
from stages.core import figures
from stages.infra import paths
from stages.infra.config import SeriesTrain, load_params
from stages.infra.errors import run_stage
from stages.infra.files import (
    atomic_path,
    load_arrays,
    read_columns,
    read_json,
    remove_others,
    write_csv,
    write_json,
)


def report(results: figures.Results, task_cfg, figure_names: list[str], best: str, versus: dict) -> str:
    """Markdown: the test metrics of models and baselines, each model's significance test against the best
    baseline (`versus`: model -> the verdict in words), the figures, generated text, and the params."""
    rows = {**{f"{b} (baseline)": v for b, v in results.baselines.items()}, **results.metrics, **results.interpolated}
    keys = [k for k, v in next(iter(results.metrics.values())).items() if isinstance(v, float)]
    against = {f"{best} (baseline)": "the best baseline"} | versus
    lines = [f"# {results.task}", "", "## Test split", "", "| | " + " | ".join(keys) + f" | against {best} |",
             "|---" * (len(keys) + 2) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{v[k]:.4g}" if k in v else "" for k in keys)
              + f" | {against.get(name, '')} |" for name, v in rows.items()]
    lines += ["", "## Figures", ""] + [f"![{Path(name).stem}]({name})" for name in figure_names]
    if paths.samples(results.task).exists():
        lines += ["", paths.samples(results.task).read_text().replace("# ", "## ", 1)]
    lines += ["", "## Params", "", "```yaml", yaml.safe_dump(asdict(task_cfg), allow_unicode=True, sort_keys=False), "```"]
    return "\n".join(lines) + "\n"


def curves_table(histories: dict) -> dict[str, list]:
    """Every model's training and validation loss by epoch, one row per model, curve and epoch, for `dvc plots
    show` (.dvc/plots/curves.json colours by `curve`)."""
    rows = [(epoch, f"{m} {split}", loss) for m, h in histories.items() for split in ("train", "val")
            for epoch, loss in zip(h["epoch"], h[f"{split}_loss"])]
    return {"epoch": [int(r[0]) for r in rows], "curve": [r[1] for r in rows], "loss": [r[2] for r in rows]}


def best_baseline(results: figures.Results, headline: str, lower_is_better: bool) -> str:
    """The baseline with the best test headline: what every model is compared with, never chosen by."""
    return (min if lower_is_better else max)(results.baselines, key=lambda b: results.baselines[b][headline])


def summary(results: figures.Results, headline: str, lower_is_better: bool) -> dict:
    """The headline test metric of every model (text: and of each network mixed with Kneser-Ney) and of the best
    baseline, the same metric of every model on the validation split, and the model chosen on validation (what the
    log stage registers in MLflow, and what a sweep is sorted by; text: a network or its Kneser-Ney mixture, both
    served), under names
    unique across tasks (`dvc exp show` then shows them without file prefixes):
    {task: {metric: {model: value, baseline_<name>: value}, val_<metric>: {model: value},
            chosen: {model: name, val_<metric>: value}}}. The choice never reads a test number."""
    pick = min if lower_is_better else max
    best = best_baseline(results, headline, lower_is_better)
    rows = results.metrics | results.interpolated
    scores = {m: v[headline] for m, v in rows.items()} | {f"baseline_{best}": results.baselines[best][headline]}
    validation = {m: v["validation"][headline] for m, v in rows.items()}
    chosen = pick(rows, key=validation.get)  # ties: the first in <task>.models, a network before its mixture
    return {results.task: {headline: scores, f"val_{headline}": validation,
                           "chosen": {"model": chosen, f"val_{headline}": validation[chosen]}}}


def headline_ensembles(results: figures.Results) -> None:
    """<task>.train.ensemble: every model with several seeds is reported (report, summary, figures) by the mean of
    its seeds' forecasts; the kept seed's numbers stay in metrics/<task>/models/<model>.json."""
    for m, v in results.metrics.items():
        if "ensemble" in v:
            results.metrics[m] = v["ensemble"] | {"kept_seed": {k: x for k, x in v.items() if k != "ensemble"}}
            results.predictions[m] = results.predictions[m] | {"predicted": results.predictions[m]["ensemble"]}


def main(argv: list[str]) -> None:
    (task,) = argv
    params = load_params()
    task_cfg = params.task(task)
    models = params.trained_models(task)
    meta, data = read_json(paths.prepared_meta(task)), load_arrays(paths.prepared_data(task))
    histories = {m: read_columns(paths.history(task, m)) for m in models}
    results = figures.Results(
        task=task,
        metrics={m: read_json(paths.model_metrics(task, m)) for m in models},
        baselines=read_json(paths.baseline_metrics(task)),
        histories={m: {k: [float(v) for v in column] for k, column in h.items()} for m, h in histories.items()},
        predictions={m: read_columns(paths.predictions(task, m)) for m in models},
        baseline_predictions=read_columns(paths.baseline_predictions(task)),
        interpolated=read_json(paths.interpolated_metrics(task)) if paths.interpolated_metrics(task).exists() else {},
        mixture_predictions=(read_columns(paths.mixture_predictions(task))
                             if paths.mixture_predictions(task).exists() else {}))
    if isinstance(getattr(task_cfg, "train", None), SeriesTrain) and task_cfg.train.ensemble:
        headline_ensembles(results)
    out = {"learning_curves.png": figures.learning_curves(results.histories, "loss", f"{task}: learning curves")}
    kind = kinds.code(task_cfg.kind, "figures")
    out |= kind.figures(results, data, meta, task_cfg, params.seed)
    folder = paths.figures(task)
    for name, fig in out.items():
        with atomic_path(folder / name) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        figures.pyplot().close(fig)
    remove_others(folder, set(out))
    with atomic_path(paths.report(task)) as tmp:
        best = best_baseline(results, kind.HEADLINE, kind.LOWER_IS_BETTER)
        tmp.write_text(report(results, task_cfg, [f"../figures/{task}/{name}" for name in out], best,
                              kind.versus(results, best)), encoding="utf-8")
    write_json(paths.summary(task), summary(results, kind.HEADLINE, kind.LOWER_IS_BETTER))
    write_csv(paths.compare_curves(task), curves_table(results.histories))  # what dvc plots show draws
    write_csv(paths.compare_test(task), kind.test_table(results))
    print(f"{task}: wrote {len(out)} figures, {paths.report(task)} and {paths.summary(task)}")

if __name__ == "__main__":
    run_stage(main, "python -m stages.plot <task>")
