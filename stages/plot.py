"""Stage plot: one task's figures and report (plots/figures/<task>/: PNGs and report.md), models beside baselines.

Each figure is also logged to the MLflow run of every model of the task.
Usage: python -m stages.plot <task>
"""
import csv
from dataclasses import asdict
from pathlib import Path

import numpy as np
import yaml

from stages import figures, tracking
from stages.config import load_params
from stages.errors import PipelineError, run_stage
from stages.files import atomic_path, load_arrays, load_checkpoint, read_json
from stages.preprocess import PREPARED


def read_columns(path: Path) -> dict[str, list]:
    """A CSV written by an earlier stage, as {column: values}; numbers become floats."""
    def value(text):
        try:
            return float(text)
        except ValueError:
            return text
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found (run: dvc repro)") from None
    return {k: [value(row[k]) for row in rows] for k in (rows[0] if rows else {})}


def classifier_figures(task, task_cfg, models, meta, metrics, baselines, histories, seed) -> dict:
    from stages import images
    from stages.train import augmenter

    data = load_arrays(PREPARED / task / "data.npz")
    classes = meta["classes"]
    # 5x5 grids as in the original exercise, of seeded random images: the splits are stored in label order
    rng = np.random.default_rng(seed)
    shown = rng.choice(len(data["y_test"]), size=min(25, len(data["y_test"])), replace=False)
    shown_train = rng.choice(len(data["y_train"]), size=min(25, len(data["y_train"])), replace=False)
    out = {"accuracy.png": figures.bar_chart({**{b: v["accuracy"] for b, v in baselines.items()},
                                              **{m: metrics[m]["accuracy"] for m in models}},
                                             set(baselines), "test accuracy", f"{task}: models and baselines")}
    if task == "transfer":  # the two transfer phases back to back, as the original plotted them
        out["phase_curves.png"] = figures.phase_curves({m: histories[m] for m in ("extract", "finetune")},
                                                       "accuracy", "transfer: feature extraction, then fine-tuning")
    else:
        out["accuracy_curves.png"] = figures.learning_curves(histories, "accuracy", f"{task}: accuracy")
    for m in models:
        predictions = read_columns(Path("plots") / task / "predictions" / f"{m}.csv")
        index = {c: i for i, c in enumerate(classes)}
        actual = np.array([index[str(c if isinstance(c, str) else int(c))] for c in predictions["actual"]])
        predicted = np.array([index[str(c if isinstance(c, str) else int(c))] for c in predictions["predicted"]])
        out[f"confusion_{m}.png"] = figures.confusion(images.confusion_matrix(actual, predicted, len(classes)),
                                                      classes, f"{task} {m}: test confusion matrix")
        # up to 5 random mistakes, then the random sample: a grid of 25 greens would teach nothing
        mistakes = np.random.default_rng(seed).permutation(np.flatnonzero(predicted != actual))[:5]
        picked = np.concatenate([mistakes, shown])
        picked = picked[np.sort(np.unique(picked, return_index=True)[1])][:len(shown)]
        titles = [f"{classes[p]}/{classes[a]}" for p, a in zip(predicted[picked], actual[picked])]
        colors = ["green" if p == a else "red" for p, a in zip(predicted[picked], actual[picked])]
        out[f"predictions_{m}.png"] = figures.image_grid(data["x_test"][picked], titles, colors, ncols=5,
                                                         title=f"{task} {m}: predicted/actual on test images, red if wrong")
    augment = augmenter(task_cfg.train, meta) if hasattr(task_cfg, "train") else None
    if augment is not None:  # what training really sees: 25 augmented training images
        import torch

        x = images.to_tensor(data["x_train"][shown_train], meta["mean"], meta["std"])
        x = augment(x, torch.Generator().manual_seed(seed))
        mean, std = torch.tensor(meta["mean"])[:, None, None], torch.tensor(meta["std"])[:, None, None]
        pixels = ((x * std + mean).clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels  # grayscale as (N, H, W), drawn in grey
        names = [classes[i] for i in data["y_train"][shown_train]]
        out["augmentation.png"] = figures.image_grid(pixels, names, ["black"] * len(names), ncols=5,
                                                    title=f"{task}: augmented training images, as training sees them")
    return out


def report(task: str, task_cfg, metrics: dict, baselines: dict, figure_names: list[str]) -> str:
    """Markdown: the test metrics of models and baselines, the figures, generated text, and the params."""
    rows = {**{f"{b} (baseline)": v for b, v in baselines.items()}, **metrics}
    keys = [k for k, v in next(iter(metrics.values())).items() if isinstance(v, float)]
    lines = [f"# {task}", "", "## Test split", "", "| | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{v[k]:.4g}" if k in v else "" for k in keys) + " |" for name, v in rows.items()]
    lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in figure_names]
    samples = Path("plots") / task / "samples.md"
    if samples.exists():
        lines += ["", samples.read_text().replace("# ", "## ", 1)]
    lines += ["", "## Params", "", "```yaml", yaml.safe_dump(asdict(task_cfg), allow_unicode=True, sort_keys=False), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    (task,) = argv
    params = load_params()
    task_cfg = params.task(task)
    models = params.trained_models(task)
    meta = read_json(PREPARED / task / "meta.json")
    histories = {m: read_columns(Path("plots") / task / m / "history.csv") for m in models}
    metrics = {m: read_json(Path("metrics") / task / "models" / f"{m}.json") for m in models}
    baselines = read_json(Path("metrics") / task / "baselines.json")
    out = {"learning_curves.png": figures.learning_curves(histories, "loss", f"{task}: learning curves")}
    if meta["kind"] == "series":
        base = read_columns(Path("plots") / task / "baselines" / "predictions.csv")
        lines = {f"{b} baseline (RMSE {baselines[b]['rmse']:.3g})": (base[b], ":") for b in baselines}
        for m in models:
            predicted = read_columns(Path("plots") / task / "predictions" / f"{m}.csv")["predicted"]
            lines[f"{m} (RMSE {metrics[m]['rmse']:.3g})"] = (predicted, "-")
        out["forecasts.png"] = figures.forecasts(base["time"], base["actual"], lines, meta["unit"],
                                                 f"{task}: test split, actual vs predicted")
    elif meta["kind"] == "images":
        out |= classifier_figures(task, task_cfg, models, meta, metrics, baselines, histories, params.seed)
    else:
        out["perplexity.png"] = figures.bar_chart({**{b: v["perplexity"] for b, v in baselines.items()},
                                                   **{m: metrics[m]["perplexity"] for m in models}}, set(baselines),
                                                  "test perplexity (lower is better)", f"{task}: models and baselines")
    folder = Path("plots") / "figures" / task
    paths = []
    for name, fig in out.items():
        with atomic_path(folder / name) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        figures.plt.close(fig)
        paths.append(folder / name)
    with atomic_path(folder / "report.md") as tmp:
        tmp.write_text(report(task, task_cfg, metrics, baselines, list(out)), encoding="utf-8")
    for m in models:
        with tracking.resume_run(load_checkpoint(Path("models") / task / f"{m}.pt")["mlflow_run_id"]) as run:
            if run is not None:
                tracking.log_artifacts(paths + [folder / "report.md"])
    print(f"{task}: wrote {len(paths)} figures and {folder / 'report.md'}")


if __name__ == "__main__":
    run_stage(main, "python -m stages.plot <task>")
