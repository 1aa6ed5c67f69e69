"""Figures of the reports: plain data in, a matplotlib Figure out. The plot stage does the file I/O."""
from dataclasses import dataclass, field

import numpy as np


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display on servers and in CI), imported on first use: only the plot
    stage needs it, and every stage imports this module through the kind modules (cost: docs/speed.md)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass(frozen=True)
class Results:
    """What the earlier stages wrote about one task, as the plot stage reads it back."""
    task: str
    metrics: dict  # model -> its test metrics (metrics/<task>/models/<model>.json)
    baselines: dict  # baseline -> its test metrics
    histories: dict  # model -> columns of its history.csv, as floats
    predictions: dict  # model -> columns of its test predictions csv, as strings
    baseline_predictions: dict  # columns of the baselines' predictions csv, as strings
    interpolated: dict = field(default_factory=dict)  # text: each network mixed with Kneser-Ney -> its test metrics
    mixture_predictions: dict = field(default_factory=dict)  # text: each mixture -> log P(actual) per test word


def learning_curves(histories: dict[str, dict], metric: str, title: str):
    """Train (dashed) and validation (solid) curves of every model; a dot marks the best epoch, whose weights
    are the ones kept."""
    fig, ax = pyplot().subplots(figsize=(8, 4.5))
    for i, (name, h) in enumerate(histories.items()):
        ax.plot(h["epoch"], h[f"train_{metric}"], "--", color=f"C{i}", alpha=0.6, label=f"{name} train")
        ax.plot(h["epoch"], h[f"val_{metric}"], "-", color=f"C{i}", label=f"{name} validation")
        best = int(np.argmin(h["val_loss"]))
        ax.plot(h["epoch"][best], h[f"val_{metric}"][best], "o", color=f"C{i}")
    ax.set(title=title, xlabel="epoch", ylabel=metric.replace("_", " "))
    if metric == "loss":
        ax.set_yscale("log")
    ax.legend(fontsize=8, ncol=2)
    return fig


def forecasts(times: list, actual: list, lines: dict[str, tuple[list, str]], unit: str, title: str, limit: int = 400):
    """Actual values and each forecast over the test steps (the first `limit` of a long hourly test set, which
    the title then says). `lines` maps a label to (values, style): dotted for baselines, solid for models."""
    n = min(limit, len(actual))
    if n < len(actual):
        title += f" (first {n} of {len(actual)} test steps)"
    fig, ax = pyplot().subplots(figsize=(10, 4.5))
    ax.plot(range(n), actual[:n], color="black", linewidth=2, label="actual")
    for i, (label, (values, style)) in enumerate(lines.items()):
        ax.plot(range(n), values[:n], style, color=f"C{i}", label=label)
    ticks = list(range(0, n, max(1, n // 8)))
    ax.set_xticks(ticks, [times[t] for t in ticks], rotation=20, fontsize=8)
    ax.set(title=title, ylabel=unit)
    ax.legend(fontsize=8)
    return fig


def bar_chart(values: dict[str, float], baselines: set[str], ylabel: str, title: str):
    """One bar per model or baseline; baselines grey, models coloured, each bar labelled with its value."""
    fig, ax = pyplot().subplots(figsize=(max(5, 1.1 * len(values)), 4))
    colors = ["0.6" if name in baselines else f"C{i}" for i, name in enumerate(values)]
    bars = ax.bar(list(values), list(values.values()), color=colors)
    ax.bar_label(bars, fmt="%.3g", fontsize=8)
    ax.set(title=title, ylabel=ylabel)
    ax.tick_params(axis="x", labelrotation=20)
    return fig


def confusion(matrix: np.ndarray, classes: list[str], title: str):
    """Counts of test images per (actual, predicted) class; the diagonal is what the model got right."""
    fig, ax = pyplot().subplots(figsize=(1 + 0.5 * len(classes), 1 + 0.5 * len(classes)))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                color="white" if count > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set(title=title, xlabel="predicted", ylabel="actual")
    return fig


def image_grid(images: np.ndarray, labels: list[str], colors: list[str], ncols: int, title: str = ""):
    """uint8 images (N, H, W) or (N, H, W, 3) tiled into one picture on white paper, each labelled above in its
    colour (green right, red wrong). One axes for the whole grid: 25 small titled axes are several times slower for
    matplotlib to lay out and save (docs/speed.md)."""
    n, height, width = images.shape[:3]
    nrows = -(-n // ncols)
    label_space, gap = height // 3, width // 8  # room above each image for its label, and between columns
    cell_h, cell_w = height + label_space, width + gap
    canvas = np.full((nrows * cell_h, ncols * cell_w) + images.shape[3:], 255, dtype=np.uint8)
    inches_per_pixel = 2 / width  # every image 2 inches wide, as in the original exercise's grids
    fig, ax = pyplot().subplots(figsize=(canvas.shape[1] * inches_per_pixel, canvas.shape[0] * inches_per_pixel))
    for i, (image, label, color) in enumerate(zip(images, labels, colors)):
        top, left = (i // ncols) * cell_h + label_space, (i % ncols) * cell_w
        canvas[top : top + height, left : left + width] = image
        ax.text(left + width / 2, top - 0.5, label, color=color, fontsize=10, ha="center", va="bottom")
    ax.imshow(canvas, cmap="gray" if images.ndim == 3 else None, vmin=0, vmax=255)
    ax.axis("off")
    if title:
        ax.set_title(title)
    return fig


def phase_curves(phases: dict[str, dict], metric: str, title: str):
    """The transfer phases end to end on one axis (the original 'Initial / Fine-Tuning' plot): each phase's
    epochs continue where the previous one stopped, with a line where it starts."""
    fig, ax = pyplot().subplots(figsize=(8, 4.5))
    offset = 0
    for i, (name, h) in enumerate(phases.items()):
        epochs = np.asarray(h["epoch"]) + offset
        ax.plot(epochs, h[f"train_{metric}"], "--", color=f"C{i}", alpha=0.6, label=f"{name} train")
        ax.plot(epochs, h[f"val_{metric}"], "-", color=f"C{i}", label=f"{name} validation")
        if offset:
            ax.axvline(offset + 0.5, color="0.5", linestyle=":")
        offset = epochs[-1]
    ax.set(title=title, xlabel="epoch (phases back to back)", ylabel=metric.replace("_", " "))
    ax.legend(fontsize=8)
    return fig
