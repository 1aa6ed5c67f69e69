"""Choose a GPU recipe for the digits task: batch size and lr, on CNN2's validation loss over seeds.

Trains CNN2 with the task's params (augmentation, epochs, cosine schedule, patience) on the prepared digits
(data/prepared/digits, from `dvc repro`), through the same fit() the train stage runs, at every batch size and
lr of the grid, and prints the mean and spread of the best validation loss over the seeds, the best epoch, the
seconds each run took, and the seconds until validation accuracy first reached --target-accuracy (wall time from
the start of fit(), CUDA warm-up and capture and each epoch's validation included). The test split is never read.

Usage: python -m bench.gpu_recipe [--batch-sizes 32 256 1024] [--lrs 0.001 0.003] [--seeds 0 1 2] [--csv PATH]
"""
import argparse
import contextlib
import io
import time
from dataclasses import asdict, replace

import numpy as np

from stages.core.inference import pick_device
from stages.core.models import build_model, model_config
from stages.core.training import fit, seed_everything
from stages.infra import paths
from stages.infra.config import load_params
from stages.infra.files import load_arrays, read_json
from stages.kinds.images import data as images
from stages.kinds.images import train as images_train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn2")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 256, 512, 1024])
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.001, 0.002, 0.004])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, nargs="+", default=[0], help="0: the task's digits.train.epochs")
    parser.add_argument("--target-accuracy", type=float, default=0.985, help="validation accuracy to time")
    parser.add_argument("--csv", default="")
    args = parser.parse_args()
    params = load_params()
    task_cfg, device = params.task("digits"), pick_device(params.device)
    data, meta = load_arrays(paths.prepared_data("digits")), read_json(paths.prepared_meta("digits"))
    train, val = [tuple(t.to(device) for t in images.tensors(data, meta, split)) for split in ("train", "val")]
    config = model_config("images", args.model, meta["shape"], asdict(task_cfg.model))
    augment = images_train.augmenter(task_cfg, meta)
    base = task_cfg.train
    print(f"{device}: digits {args.model}, {len(train[0])} train / {len(val[0])} val, augment {augment is not None}, "
          f"{base.lr_schedule}, patience {base.patience}", flush=True)
    rows = []
    grid = [(b, lr, e or base.epochs) for e in args.epochs for b in args.batch_sizes for lr in args.lrs]
    for batch, lr, max_epochs in grid:
        losses, epochs, seconds, to_target = [], [], [], []
        for seed in args.seeds:
            cfg = replace(base, batch_size=batch, lr=lr, epochs=max_epochs)
            generator = seed_everything(seed)
            model = build_model("images", args.model, config).to(device)
            reached, started = [], time.perf_counter()  # seconds since fit() began, at each epoch that reached the target

            def on_epoch(stats, reached=reached, started=started):
                if stats["val_accuracy"] >= args.target_accuracy - 1e-6:  # a float32 mean: 394/400 reads 0.98499995
                    reached.append(time.perf_counter() - started)

            with contextlib.redirect_stdout(io.StringIO()):
                best, _ = fit(model, train, val, cfg, generator, augment=augment, log_epoch=on_epoch)
            seconds.append(time.perf_counter() - started)
            to_target.append(reached[0] if reached else float("nan"))
            losses.append(best["val_loss"])
            epochs.append(best["epoch"])
        row = {"batch_size": batch, "lr": lr, "epochs": max_epochs, "val_loss_mean": float(np.mean(losses)),
               "val_loss_std": float(np.std(losses)), "best_epoch_mean": float(np.mean(epochs)),
               "seconds_mean": float(np.mean(seconds)), "seconds_to_target": " ".join(f"{t:.2f}" for t in to_target),
               "val_losses": " ".join(f"{v:.4f}" for v in losses)}
        rows.append(row)
        print(f"batch {batch:5d}  lr {lr:<7g} epochs {max_epochs:3d}  val_loss {row['val_loss_mean']:.4f} "
              f"+- {row['val_loss_std']:.4f} ({row['val_losses']})  best epoch {row['best_epoch_mean']:.1f}  "
              f"{row['seconds_mean']:.1f}s a run, {args.target_accuracy:.1%} val accuracy after "
              f"{row['seconds_to_target']} s (nan: never)",
              flush=True)
    best = min(rows, key=lambda r: r["val_loss_mean"])
    print(f"lowest mean validation loss: batch {best['batch_size']}, lr {best['lr']:g}, epochs {best['epochs']} "
          f"({best['val_loss_mean']:.4f})")
    if args.csv:
        with open(args.csv, "w") as f:
            f.write(",".join(rows[0]) + "\n")
            f.writelines(",".join(str(v) for v in r.values()) + "\n" for r in rows)


if __name__ == "__main__":
    main()
