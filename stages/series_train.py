"""What train needs of the forecasting kind beyond the shared loop: no augmentation, and the settings the logged
model needs to forecast from real values."""
import numpy as np


def augmenter(task_cfg, meta: dict):
    """Forecasting windows are never augmented."""
    return None


def serving(data: dict, meta: dict, task_cfg) -> tuple[dict, np.ndarray]:
    """What the logged model needs to forecast from real values (`spec`), and an input example: the real values
    before the first two training targets."""
    seq_length = int(data["x_train"].shape[1])
    spec = {k: meta[k] for k in ("scaler", "log", "differences", "horizon", "unit")} | {"seq_length": seq_length}
    span = seq_length + sum(meta["differences"])
    ends = data["index_train"][:2] - meta["horizon"] + 1  # each window's last input is `horizon` steps before its target
    return spec, np.stack([data["series"][end - span : end] for end in ends])
