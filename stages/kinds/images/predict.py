"""A trained classifier's predictions: the test scores (stage evaluate) and the logged MLflow model's answers
(`serve`, run by stages/infra/serving.py), from 0-255 pixels to class names and probabilities."""
import numpy as np

from stages.core.inference import classify, predict
from stages.kinds.images.data import resize, tensors, to_tensor
from stages.kinds.images.metrics import confusion_matrix


def score(model, data: dict, meta: dict, device) -> tuple[dict, dict]:
    """Test accuracy, loss and per-class precision/recall, plus accuracy and loss on the validation split
    (`validation`: what settings and the registered model may be chosen on); the actual and predicted class of
    every test image."""
    x, y = tensors(data, meta, "test")
    logp, top5 = classify(model, x, y, device)
    names, predicted = meta["classes"], top5[:, 0]
    precision, recall = per_class_precision_recall(confusion_matrix(y.numpy(), predicted, len(names)))
    metrics = {"accuracy": float((predicted == y.numpy()).mean()), "loss": float(-logp.mean()),
               "precision": dict(zip(names, precision.round(4).tolist())), "recall": dict(zip(names, recall.round(4).tolist()))}
    x_val, y_val = tensors(data, meta, "val")
    logp_val, top5_val = classify(model, x_val, y_val, device)
    metrics["validation"] = {"accuracy": float((top5_val[:, 0] == y_val.numpy()).mean()), "loss": float(-logp_val.mean())}
    return metrics, {"actual": [names[i] for i in y.tolist()], "predicted": [names[i] for i in predicted.tolist()]}


def serve(model, images, spec: dict):
    """The likeliest class and every class's probability (columns p_<class>) of each image: uint8 or 0-255
    pixels, (N, H, W) grayscale or (N, H, W, C); grayscale images of another size are resized as preprocess does."""
    import pandas as pd
    import torch

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


def per_class_precision_recall(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision (of each predicted column) and recall (of each actual row); 0 where nothing was predicted."""
    hits = np.diag(matrix).astype(np.float64)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    return (np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0),
            np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0))
