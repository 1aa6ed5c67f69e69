"""Per-stage wall times of a `dvc repro` (or `dvc exp run`): runs the command given, echoes its output with the
seconds since start, and prints each stage's time and the total per stage kind (train, evaluate, ...).

    python -m bench.stage_times dvc repro -f

A stage's time runs from its "Running stage" line to the next one (or the end), so it includes DVC's own work
for that stage (hashing outputs, writing dvc.lock).
"""
import re
import subprocess
import sys
import time


def main() -> None:
    command = sys.argv[1:] or ["dvc", "repro"]
    started = time.perf_counter()
    marks = []  # (seconds, stage)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            now = time.perf_counter() - started
            print(f"{now:7.1f}s {line}", end="", flush=True)
            found = re.search(r"Running stage '([^']+)'", line)
            if found:
                marks.append((now, found.group(1)))
    total = time.perf_counter() - started
    print(f"\n{'stage':<28s} {'seconds':>8s}")
    kinds = {}
    for (start, stage), end in zip(marks, [m[0] for m in marks[1:]] + [total]):
        print(f"{stage:<28s} {end - start:8.1f}")
        kind = stage.partition("@")[0]
        kinds[kind] = kinds.get(kind, 0.0) + end - start
    print("\nper stage kind: " + ", ".join(f"{k} {v:.1f}s" for k, v in kinds.items()))
    print(f"total {total:.1f}s (before the first stage: {marks[0][0] if marks else total:.1f}s); exit code {proc.returncode}")
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
