"""What the CPU kernel pins (stages/core/kernels.py) cost: three workloads, each timed in fresh interpreters with the
pins and without them (the libraries' own choice), alternated, in the same run; prints seconds and the ratio.

    python -m bench.kernels [--repeat 3]

Workloads, on the bundled data after `dvc repro` (data/prepared/): a SARIMA fit on passengers (OpenBLAS), 300
Adam steps of passengers' LSTM (MKL), 5 forward-backward passes of digits' CNN2 on 512 images (oneDNN).
On a CPU without AVX-512 the pins ask for what the libraries pick anyway, so expect ratios near 1 there.
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKLOADS = {
    "sarima fit (OpenBLAS)": """
import numpy as np
from stages.kinds.series import data as series
d = np.load("data/prepared/passengers/data.npz"); end = int(d["index_val"][-1]) + 1
series.sarima_fit(np.log(d["series"][:end]), (0, 1, 1), (0, 1, 1, 12))
""",
    "LSTM, 300 steps (MKL)": """
import torch
torch.manual_seed(0)
m = torch.nn.LSTM(1, 32, batch_first=True); head = torch.nn.Linear(32, 1)
opt = torch.optim.Adam([*m.parameters(), *head.parameters()], 0.01)
x, y = torch.randn(64, 12, 1), torch.randn(64, 1)
for _ in range(300):
    opt.zero_grad(); out, _ = m(x); ((head(out[:, -1]) - y) ** 2).mean().backward(); opt.step()
""",
    "CNN2, 5 passes of 512 (oneDNN)": """
import torch
from stages.core.models import build_model
torch.manual_seed(0)
m = build_model("images", "cnn2", {"in_channels": 1, "num_classes": 10, "image_size": 28, "dropout": 0.25})
x = torch.randn(512, 1, 28, 28)
for _ in range(5):
    m(x).sum().backward()
""",
}
# Times only the workload: the interpreter's start and the imports are outside the clock.
CLOCK = "import time, stages, torch, numpy, statsmodels.api\nt = time.perf_counter()\n{0}\nprint(time.perf_counter() - t)"


def seconds(code: str, pinned: bool) -> float:
    """One run in a fresh interpreter. Unpinned: each variable set empty, which the package import leaves alone
    and each library reads as unset (its own choice of kernels; torch warns once about the empty value)."""
    from stages.core import kernels

    env = {k: v for k, v in os.environ.items() if k not in kernels.AVX2 | kernels.NUMPY_AVX512}
    if not pinned:
        env |= {k: "" for k in kernels.AVX2 | kernels.NUMPY_AVX512}
    done = subprocess.run([sys.executable, "-c", CLOCK.format(code)], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=True)
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'workload':32} {'pinned s':>9} {'unpinned s':>11} {'ratio':>6}  (best of {args.repeat}, alternated)")
    for name, code in WORKLOADS.items():
        runs = {True: [], False: []}
        for _ in range(args.repeat):
            for pinned in (True, False):
                runs[pinned].append(seconds(code, pinned))
        best = {k: min(v) for k, v in runs.items()}
        print(f"{name:32} {best[True]:9.3f} {best[False]:11.3f} {best[True] / best[False]:6.2f}")


if __name__ == "__main__":
    main()
