"""The image-classification kind (digits, flowers, transfer): prepare, baselines, tensors, score and figures,
the functions every kind module has, plus the pure array functions they use (splits, normalisation, the
confusion matrix). Arrays in, arrays out; stages do the I/O."""
import numpy as np

from stages import figures as draw
from stages import imagefiles, paths
from stages.config import ImageTask, TransferPreprocess
from stages.errors import PipelineError

HEADLINE, LOWER_IS_BETTER = "accuracy", False  # the test metric metrics/summary/<task>.json lists per model


def prepare(task: str, cfg) -> tuple[dict, dict]:
    """Stratified seeded splits (few labels per class for transfer), kept as uint8; normalised when loaded, with
    the training split's mean and std. Flowers are decoded and resized once, here."""
    skipped, classes = [], [str(d) for d in range(10)]
    if task == "digits":
        train = imagefiles.read_idx(paths.raw_file(task)), imagefiles.read_idx(paths.raw(task) / "train-labels-idx1-ubyte.gz")
        test = None
        if (paths.raw(task) / "t10k-images-idx3-ubyte.gz").exists():  # the official files have a test set of their own
            test = (imagefiles.read_idx(paths.raw(task) / "t10k-images-idx3-ubyte.gz"),
                    imagefiles.read_idx(paths.raw(task) / "t10k-labels-idx1-ubyte.gz"))
        arrays = split_images(*train, cfg, test)
        arrays = {k: resize(v, cfg.image_size) if k.startswith("x") else v for k, v in arrays.items()}
    elif task == "flowers":
        images, labels, classes, skipped = imagefiles.build_image_cache(paths.raw_file(task), cfg.image_size)
        if skipped:
            print(f"skipped {len(skipped)} files that are not decodable images: {', '.join(skipped[:10])}")
        arrays = split_images(images, labels, cfg)
    elif (paths.raw(task) / paths.CIFAR_FOLDER).exists():  # transfer, online: CIFAR-10 and its official test batch
        (images, labels), test, classes = imagefiles.read_cifar10(paths.raw(task) / paths.CIFAR_FOLDER)
        arrays = few_labels_split(images, labels, cfg, test)
    else:  # transfer, offline: the UCI 8x8 digits, upsampled to look like MNIST
        images, labels = imagefiles.read_uci_digits(paths.raw_file(task), cfg.image_size)
        arrays = few_labels_split(images, labels, cfg)
    arrays = {k: v.astype(np.int64) if k.startswith("y") else v for k, v in arrays.items()}
    mean, std = channel_stats(arrays["x_train"])  # training images only
    shape = {"in_channels": len(mean), "num_classes": len(classes), "image_size": int(arrays["x_train"].shape[1])}
    meta = {"classes": classes, "mean": mean, "std": std, "skipped": skipped, "shape": shape,
            "sizes": {s: int(len(arrays[f"y_{s}"])) for s in ("train", "val", "test")}}
    return arrays, meta


def split_images(images: np.ndarray, labels: np.ndarray, cfg, test=None) -> dict:
    """Stratified seeded train/val(/test) split; `test` is an official (images, labels) test set if there is one."""
    rng = np.random.default_rng(cfg.split_seed)
    if test is None:
        keep, held = stratified_split(labels, cfg.test_ratio, rng)
        test, (images, labels) = (images[held], labels[held]), (images[keep], labels[keep])
    keep, held = stratified_split(labels, cfg.val_ratio, rng)
    return {"x_train": images[keep], "y_train": labels[keep], "x_val": images[held], "y_val": labels[held],
            "x_test": test[0], "y_test": test[1]}


def few_labels_split(images: np.ndarray, labels: np.ndarray, cfg: TransferPreprocess, test=None) -> dict:
    """train_per_class labelled images per class, val_per_class more for early stopping, and the rest (or the
    official `test` set when there is one) for the test."""
    smallest, labelled = int(np.bincount(labels).min()), cfg.train_per_class + cfg.val_per_class
    if labelled > smallest or (test is None and labelled == smallest):
        raise PipelineError(f"params.yaml: transfer.preprocess.train_per_class + val_per_class is {labelled}, but the "
                            f"smallest class has {smallest} images" + ("" if test is not None else
                                                                      " and some must be left for the test split"))
    rng = np.random.default_rng(cfg.split_seed)
    train, rest = few_per_class(labels, cfg.train_per_class, rng, keep_rest=test is None)
    val, unused = few_per_class(labels[rest], cfg.val_per_class, rng, keep_rest=test is None)
    val = rest[val]
    test_images, test_labels = test if test is not None else (images[rest[unused]], labels[rest[unused]])
    return {"x_train": images[train], "y_train": labels[train], "x_val": images[val], "y_val": labels[val],
            "x_test": test_images, "y_test": test_labels}


def pixels(images: np.ndarray, side: int = 32) -> np.ndarray:
    """Flattened pixels in [0, 1], average-pooled down to at most side x side so large photos stay cheap."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(images).float() / 255
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (N, C, H, W)
    if x.shape[-1] > side:
        x = F.adaptive_avg_pool2d(x, side)
    return x.flatten(1).numpy()


def baselines(data: dict, meta: dict, cfg) -> tuple[dict, dict]:
    """The majority class, and logistic regression on the pixels; (metrics, predicted class names per baseline)."""
    from sklearn.linear_model import LogisticRegression

    y_train, y_test = data["y_train"], data["y_test"]
    majority = np.full_like(y_test, np.bincount(y_train).argmax())
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # one BLAS thread: the same coefficients on every run, whatever the load
        logistic = LogisticRegression(max_iter=cfg.max_iter).fit(pixels(data["x_train"]), y_train)
    predictions = {"majority": majority, "logistic_pixels": logistic.predict(pixels(data["x_test"]))}
    metrics = {name: {"accuracy": float((p == y_test).mean())} for name, p in predictions.items()}
    names = meta["classes"]
    columns = {"actual": [names[i] for i in y_test]}
    return metrics, columns | {k: [names[i] for i in p] for k, p in predictions.items()}


def augmenter(task_cfg, meta: dict):
    """augment(x, generator) for training batches with the task's settings, or None when it does not augment
    (transfer, or augment.enabled: false)."""
    if not isinstance(task_cfg, ImageTask) or not task_cfg.train.augment.enabled:
        return None
    from stages.augment import augment

    a = task_cfg.train.augment
    return lambda x, generator: augment(x, generator, flip=a.flip, crop_scale=tuple(a.crop_scale),
                                        rotation=a.rotation, jitter=a.jitter, elastic=a.elastic,
                                        elastic_sigma=a.elastic_sigma, mean=meta["mean"], std=meta["std"])


def tensors(data: dict, meta: dict, split: str):
    """One split as float (N, C, H, W) images, normalised with the training split's statistics, and int64 labels."""
    import torch

    return to_tensor(data[f"x_{split}"], meta["mean"], meta["std"]), torch.from_numpy(data[f"y_{split}"])


def score(model, data: dict, meta: dict, device) -> tuple[dict, dict]:
    """Test accuracy, loss and per-class precision/recall; the actual and predicted class of every test image."""
    from stages.training import classify

    x, y = tensors(data, meta, "test")
    logp, top5 = classify(model, x, y, device)
    names, predicted = meta["classes"], top5[:, 0]
    precision, recall = per_class_precision_recall(confusion_matrix(y.numpy(), predicted, len(names)))
    metrics = {"accuracy": float((predicted == y.numpy()).mean()), "loss": float(-logp.mean()),
               "precision": dict(zip(names, precision.round(4).tolist())), "recall": dict(zip(names, recall.round(4).tolist()))}
    return metrics, {"actual": [names[i] for i in y.tolist()], "predicted": [names[i] for i in predicted.tolist()]}


def serving(data: dict, meta: dict, task_cfg) -> tuple[dict, np.ndarray]:
    """What the logged model needs to classify raw images (`spec`), and an input example: two training images."""
    spec = {k: meta[k] for k in ("classes", "mean", "std")} | {"image_size": meta["shape"]["image_size"]}
    return spec, data["x_train"][:2]


def serve(model, images, spec: dict):
    """The likeliest class and every class's probability (columns p_<class>) of each image: uint8 or 0-255
    pixels, (N, H, W) grayscale or (N, H, W, C); grayscale images of another size are resized as preprocess does."""
    import pandas as pd
    import torch

    from stages.training import predict

    x, size = np.asarray(images), spec["image_size"]
    if x.ndim == 3 and x.shape[1:] != (size, size):
        x = resize(np.clip(x, 0, 255).round().astype(np.uint8), size)
    channels = 1 if x.ndim == 3 else x.shape[-1]
    if x.ndim not in (3, 4) or x.shape[1:3] != (size, size) or channels != len(spec["mean"]):
        raise ValueError(f"expected images of {size}x{size} pixels with {len(spec['mean'])} channel(s), 0-255, "
                         f"shaped (N, H, W) or (N, H, W, C); got shape {x.shape}")
    logits = predict(model, to_tensor(x, spec["mean"], spec["std"]), 256, torch.device("cpu"))
    probabilities = torch.softmax(logits, dim=1).numpy()
    frame = pd.DataFrame(probabilities, columns=[f"p_{c}" for c in spec["classes"]])
    frame.insert(0, "class", [spec["classes"][i] for i in probabilities.argmax(1)])
    return frame


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


def stratified_split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held) indices; each class gives `fraction` of its examples (rounded, at least one) to held."""
    keep, held = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n = max(1, round(fraction * len(members))) if fraction > 0 else 0
        held.append(members[:n])
        keep.append(members[n:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def few_per_class(labels: np.ndarray, per_class: int, rng: np.random.Generator,
                  keep_rest: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(picked, rest) indices: `per_class` random examples of each class, and everything else (which must not
    be empty when `keep_rest`: it is the test split)."""
    picked = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class + keep_rest:
            raise PipelineError(f"class {c} has {len(members)} examples: too few to pick {per_class} per class"
                                + (" and keep some for testing" if keep_rest else ""))
        picked.append(rng.choice(members, per_class, replace=False))
    picked = np.sort(np.concatenate(picked))
    return picked, np.setdiff1d(np.arange(len(labels)), picked)


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] of uint8 (N, H, W) or (N, H, W, C), in chunks to bound memory."""
    pixels = images.reshape(len(images), -1, 1 if images.ndim == 3 else images.shape[-1])
    total = np.zeros(pixels.shape[-1])
    squares = np.zeros(pixels.shape[-1])
    for start in range(0, len(pixels), 512):
        chunk = pixels[start : start + 512].astype(np.float64) / 255
        total += chunk.sum(axis=(0, 1))
        squares += (chunk**2).sum(axis=(0, 1))
    count = pixels.shape[0] * pixels.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 1e-12))
    return mean.round(4).tolist(), std.round(4).tolist()


def to_tensor(images: np.ndarray, mean: list[float], std: list[float]):
    """uint8 (N, H, W) or (N, H, W, C) -> float (N, C, H, W), normalised with the training mean and std."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    mean, std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    return ((x.float() / 255 - mean) / std).contiguous()


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W) images -> (N, size, size), bilinear with antialiasing; unchanged when already that size."""
    if images.shape[1:3] == (size, size):
        return images
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images)).float()[:, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, n: int) -> np.ndarray:
    """(n, n) counts; row = actual class, column = predicted class."""
    return np.bincount(np.asarray(actual) * n + np.asarray(predicted), minlength=n * n).reshape(n, n)


def per_class_precision_recall(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision (of each predicted column) and recall (of each actual row); 0 where nothing was predicted."""
    hits = np.diag(matrix).astype(np.float64)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    return (np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0),
            np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0))

