"""Start-up of every stage module: the seconds `import stages.<stage>` takes in a fresh interpreter (the best of
--repeat runs) and the heavy libraries that import pulls in, for this checkout and, with --against REV, for
another revision checked out in a temp git worktree, measured in the same run, with the ratio.

    python -m bench.startup --against HEAD~1

What a stage imports later, inside main(), is not counted here (mlflow when it logs, statsmodels for SARIMA, and
torch._dynamo, which torch imports on the first call of an optimizer: about 2 s, out of this project's hands).
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ["check", "download", "preprocess", "baseline", "train", "transfer", "evaluate", "generate", "plot", "log"]
HEAVY = ["torch", "matplotlib.pyplot", "mlflow", "sklearn", "statsmodels", "pandas"]
PROBE = ("import sys, time; t = time.perf_counter(); import stages.{0}; "
         "print(time.perf_counter() - t, ','.join(m for m in {1} if m in sys.modules))")


def import_time(folder: Path, stage: str, repeat: int) -> tuple[float, str]:
    runs = []
    for _ in range(repeat):
        done = subprocess.run([sys.executable, "-c", PROBE.format(stage, HEAVY)], cwd=folder, capture_output=True,
                              text=True, check=True)
        seconds, heavy = done.stdout.split()[0], (done.stdout.split() + [""])[1]
        runs.append((float(seconds), heavy or "-"))
    return min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", help="a git revision to measure beside this checkout")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        other = None
        if args.against:
            other = Path(tmp) / "other"
            subprocess.run(["git", "worktree", "add", "-q", "--detach", str(other), args.against], cwd=ROOT, check=True)
        try:
            print(f"{'stage':12s} {'this checkout':>14s}  imports"
                  + (f"   | {args.against:>14s}  imports   ratio" if other else ""))
            for stage in STAGES:
                now, heavy = import_time(ROOT, stage, args.repeat)
                line = f"{stage:12s} {now:13.2f}s  {heavy}"
                if other is not None:
                    before, heavy_before = import_time(other, stage, args.repeat)
                    line += f"   | {before:13.2f}s  {heavy_before}   {before / now:.1f}x"
                print(line, flush=True)
        finally:
            if other is not None:
                subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
