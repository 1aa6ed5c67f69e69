"""What train needs of the forecasting kind beyond the shared loop: no augmentation, the hybrid models' own training
data, and the settings the logged model needs to forecast from real values."""
import hashlib

import numpy as np

from stages.infra.errors import PipelineError
from stages.kinds.series.data import fit_classical, hybrid_targets, hybrid_windows

_CLASSICAL: dict = {}  # (series hash, train_end, fit_end, baseline settings) -> the fitted classical part


def augmenter(task_cfg, meta: dict):
    """Forecasting windows are never augmented."""
    return None


def model_inputs(name: str, config: dict, data: dict, meta: dict, task_cfg) -> tuple[dict, dict]:
    """(config, {split: (x, y) arrays}) of model `name`. A plain model trains on the shared windows ({}). A hybrid
    (hybrid_<cell>) gets its classical part, the baseline's SARIMA fitted on the training and validation steps only
    and then fixed, in its config, and trains on windows of that SARIMA's one-step residuals: the training part's
    targets to fit, the validation part's to stop early."""
    if not name.startswith("hybrid_"):
        return config, {}
    if meta["horizon"] != 1:
        raise PipelineError("params.yaml: a hybrid model forecasts one step ahead, as its SARIMA does: set the "
                            "task's preprocess.horizon 1")
    values, seq_length = data["series"], int(data["x_train"].shape[1])
    train_end, fit_end = int(data["index_val"][0]), int(data["index_val"][-1]) + 1
    key = (hashlib.sha256(values.tobytes()).hexdigest(), train_end, fit_end, task_cfg.baseline)
    if key not in _CLASSICAL:  # the hybrids of a task share one SARIMA fit (slow on thousands of hours)
        _CLASSICAL[key] = fit_classical(values, train_end, fit_end, task_cfg.baseline)
    classical = _CLASSICAL[key]
    arrays = {split: hybrid_windows(values, classical, hybrid_targets(data[f"index_{split}"], classical, seq_length),
                                    seq_length) for split in ("train", "val")}
    return config | {"classical": classical}, arrays


def serving(data: dict, meta: dict, task_cfg) -> tuple[dict, np.ndarray]:
    """What the logged model needs to forecast from real values (`spec`; with `ensemble`, the served model is the
    mean of the checkpoint's seeds, as the headline), and an input example: the real values before the last two
    training targets, as many as a plain model or a hybrid needs."""
    seq_length = int(data["x_train"].shape[1])
    spec = {k: meta[k] for k in ("scaler", "log", "differences", "horizon", "unit")} | {"seq_length": seq_length,
                                                                                          "ensemble": task_cfg.train.ensemble}
    span = seq_length + sum(meta["differences"])
    baseline = task_cfg.baseline
    if baseline.sarima_order:  # a hybrid needs seq_length residuals after SARIMA's differences
        seasonal = baseline.sarima_seasonal_order[1] * baseline.season if baseline.sarima_seasonal_order else 0
        span = max(span, seq_length + baseline.sarima_order[1] + seasonal)
    ends = data["index_train"][-2:] - meta["horizon"] + 1  # each window's last input is `horizon` steps before its target
    return spec, np.stack([data["series"][end - span : end] for end in ends])
