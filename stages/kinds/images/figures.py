"""The image-classification kind's figures (stage plot): accuracy bars, curves, confusion matrices, test images
with their predictions, and the augmented training images as training sees them."""
import numpy as np

from stages.core import figures as draw
from stages.core.significance import mcnemar, verdict
from stages.infra.errors import PipelineError
from stages.kinds.images.data import to_tensor
from stages.kinds.images.metrics import confusion_matrix
from stages.kinds.images.train import augmenter

HEADLINE, LOWER_IS_BETTER = "accuracy", False  # the test metric metrics/summary/<task>.json lists per model


def figures(results: draw.Results, data: dict, meta: dict, task_cfg, seed: int) -> dict:
    """Accuracy bars, curves, and per model a confusion matrix and a grid of test images (mistakes first); for a
    task that augments, the augmented training images as training sees them."""
    task, classes = results.task, meta["classes"]
    out = {"accuracy.png": draw.bar_chart({**{b: v["accuracy"] for b, v in results.baselines.items()},
                                           **{m: v["accuracy"] for m, v in results.metrics.items()}},
                                          set(results.baselines), "test accuracy", f"{task}: models and baselines")}
    if {"extract", "finetune"} <= set(results.histories):  # transfer's two phases back to back, as the original plotted them
        out["phase_curves.png"] = draw.phase_curves({m: results.histories[m] for m in ("extract", "finetune")},
                                                    "accuracy", f"{task}: feature extraction, then fine-tuning")
    else:
        out["accuracy_curves.png"] = draw.learning_curves(results.histories, "accuracy", f"{task}: accuracy")
    # 5x5 grids as in the original exercise, of seeded random images: the splits are stored in label order
    rng = np.random.default_rng(seed)
    shown = rng.choice(len(data["y_test"]), size=min(25, len(data["y_test"])), replace=False)
    shown_train = rng.choice(len(data["y_train"]), size=min(25, len(data["y_train"])), replace=False)
    index = {c: i for i, c in enumerate(classes)}
    for m, columns in results.predictions.items():
        actual = np.array([index[c] for c in columns["actual"]])
        predicted = np.array([index[c] for c in columns["predicted"]])
        out[f"confusion_{m}.png"] = draw.confusion(confusion_matrix(actual, predicted, len(classes)), classes,
                                                   f"{task} {m}: test confusion matrix")
        # up to 5 random mistakes, then the random sample: a grid of 25 greens would teach nothing
        mistakes = np.random.default_rng(seed).permutation(np.flatnonzero(predicted != actual))[:5]
        picked = np.concatenate([mistakes, shown])
        picked = picked[np.sort(np.unique(picked, return_index=True)[1])][:len(shown)]
        titles = [f"{classes[p]}/{classes[a]}" for p, a in zip(predicted[picked], actual[picked])]
        colors = ["green" if p == a else "red" for p, a in zip(predicted[picked], actual[picked])]
        out[f"predictions_{m}.png"] = draw.image_grid(data["x_test"][picked], titles, colors, ncols=5,
                                                      title=f"{task} {m}: predicted/actual on test images, red if wrong")
    transform = augmenter(task_cfg, meta)
    if transform is not None:  # what training really sees: 25 augmented training images
        import torch

        x = transform(to_tensor(data["x_train"][shown_train], meta["mean"], meta["std"]), torch.Generator().manual_seed(seed))
        mean, std = torch.tensor(meta["mean"])[:, None, None], torch.tensor(meta["std"])[:, None, None]
        grid = ((x * std + mean).clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        grid = grid[..., 0] if grid.shape[-1] == 1 else grid  # grayscale as (N, H, W), drawn in grey
        names = [classes[i] for i in data["y_train"][shown_train]]
        out["augmentation.png"] = draw.image_grid(grid, names, ["black"] * len(names), ncols=5,
                                                  title=f"{task}: augmented training images, as training sees them")
    return out


def versus(results: draw.Results, best: str) -> dict[str, str]:
    """Each model's exact McNemar test against baseline `best` on the same test images, in words."""
    actual = np.array(results.baseline_predictions["actual"])
    reference = np.array(results.baseline_predictions[best]) == actual
    out = {}
    for m, columns in results.predictions.items():
        right = np.array(columns["predicted"]) == np.array(columns["actual"])
        if len(right) != len(actual):
            raise PipelineError(f"{results.task}: {m} was scored on {len(right)} test images, the baselines on "
                                f"{len(actual)}: re-run evaluate and baseline")
        b, c, p = mcnemar(right, reference)
        out[m] = verdict(p, b > c, len(actual), "images")
    return out


def test_table(results: draw.Results) -> dict[str, list]:
    """`dvc plots show`'s test picture (.dvc/plots/images_test.json): a confusion matrix per model, one row per test
    image and model: model, x (the actual class), y (the predicted class)."""
    rows = {m: (p["actual"], p["predicted"]) for m, p in results.predictions.items()}
    return {"model": [m for m, (a, _) in rows.items() for _ in a], "x": [c for a, _ in rows.values() for c in a],
            "y": [c for _, p in rows.values() for c in p]}
