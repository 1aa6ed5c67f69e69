"""One epoch of the pipeline's training loop on real data, in one process or as the workers of the pipeline's own
elastic launch (stages/infra/launch.py), for tests/test_distributed.py. Rank 0 saves the trained weights.

    python -m tests.ddp_fit <images,series> <out.pt> <world size>     (one or both kinds, one after the other)

images: the digits CNN on 321 of scikit-learn's 8x8 digits (10 batches of 32 and a last one of 1 row: with two
ranks one of them has no row of it), augmented (a draw per image); series: an LSTM on airline passengers windows.
"""
import os
import sys
from types import SimpleNamespace

import numpy as np
import torch

from stages.core.models import DigitsCNN, RecurrentRegressor
from stages.core.training import fit, seed_everything
from stages.infra import launch
from stages.infra.config import Scale
from stages.infra.errors import run_stage
from stages.kinds.images.train import augment

CFG = SimpleNamespace(lr=3e-3, weight_decay=0.0, batch_size=32, epochs=1, patience=1, lr_schedule="constant")


def images() -> tuple:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy((digits.images / 16.0).astype(np.float32))[:, None]  # (1797, 1, 8, 8)
    y = torch.from_numpy(digits.target.astype(np.int64))
    model = DigitsCNN(1, 10, 8)
    draws = lambda xb, g: augment(xb, g, flip=False, crop_scale=(0.85, 1.0), rotation=10.0, elastic=1.0,  # noqa: E731
                                  elastic_sigma=2.0, jitter=0.0, mean=[0.0], std=[1.0])
    return model, (x[:321], y[:321]), (x[1500:], y[1500:]), draws


def series() -> tuple:
    from pmdarima.datasets import load_airpassengers

    values = torch.from_numpy(load_airpassengers().astype(np.float32))
    values = (values - values[:100].mean()) / values[:100].std()
    windows = values.unfold(0, 13, 1)  # (132, 13): 12 months in, the 13th out
    x, y = windows[:, :12, None], windows[:, 12:]
    model = RecurrentRegressor("lstm", input_size=1, hidden_size=16, num_layers=1, dropout=0.0, output_size=1)
    return model, (x[:97], y[:97]), (x[97:], y[97:]), None


def main(argv: list[str]) -> None:
    kinds, out, size = argv
    if launch.needs_workers(Scale(int(size), 1)):
        launch.run_workers(Scale(int(size), 1), "tests.ddp_fit", argv, "ddp_fit")
        return
    with launch.process_group("cpu"):
        trained = {}
        for kind in kinds.split(","):
            generator = seed_everything(0)
            model, train, val, draws = {"images": images, "series": series}[kind]()
            start = {k: v.clone() for k, v in model.state_dict().items()}
            best, _ = fit(model, train, val, CFG, generator, augment=draws)
            trained[kind] = {"state_dict": model.state_dict(), "start": start, "val_loss": best["val_loss"],
                             "world": int(os.environ.get("WORLD_SIZE", 1))}
        if launch.writer(Scale(int(size), 1)):
            torch.save(trained, out)

if __name__ == "__main__":
    run_stage(main, "python -m tests.ddp_fit <kind> <out> <size>", sys.argv[1:])
