"""Does this machine reproduce the commit? Compares every number in metrics/ (each model's and baseline's test and
validation metrics, the seed spreads, the summaries) in the workspace with the commit's, after `dvc repro`, and
prints each one that differs, by how much, against the tolerance.

The tolerance is relative, 0 by default: on a Linux x86-64 CPU with AVX2 the kernels are pinned
(stages/core/kernels.py) and every output is byte-identical, so any difference is a finding. Elsewhere (macOS, arm64)
docs/reproducibility.md says what to expect: classical baselines within 1e-6 (`--rtol 1e-6 --targets
metrics/<task>/baselines.json`), trained networks only within their seed spread.

Usage: python tools/reproduces.py [REV] [--rtol R] [--targets PATH ...]   (REV: HEAD by default)
Exit status 0: every metric within the tolerance; 1: some beyond it (listed); 2: dvc could not compare.
"""
import argparse
import json
import math
import subprocess
import sys


def differences(diff: dict, rtol: float) -> tuple[int, list[tuple]]:
    """(metrics compared, [(file, key, old, new, relative difference)] beyond rtol) from `dvc metrics diff --all
    --json`. A metric missing on one side is beyond any tolerance."""
    compared, beyond = 0, []
    for file, metrics in diff.items():
        for key, change in metrics.items():
            compared += 1
            old, new = change.get("old"), change.get("new")
            if old == new:
                continue
            if not all(isinstance(v, (int, float)) for v in (old, new)):
                beyond.append((file, key, old, new, math.inf))
                continue
            relative = abs(new - old) / max(abs(old), abs(new))
            if relative > rtol:
                beyond.append((file, key, old, new, relative))
    return compared, beyond


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", nargs="?", default="HEAD")
    parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (default 0: byte for byte)")
    parser.add_argument("--targets", nargs="*", default=["metrics"], help="metrics files or folders (default: metrics/)")
    args = parser.parse_args(argv)
    command = [sys.executable, "-m", "dvc", "metrics", "diff", args.rev, "--all", "--json"]
    command += ["--targets", *args.targets]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"error: dvc metrics diff {args.rev}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'failed'}")
        return 2
    compared, beyond = differences(json.loads(done.stdout or "{}"), args.rtol)
    for file, key, old, new, relative in beyond:
        print(f"{file}: {key}: {old} in {args.rev}, {new} here (relative difference {relative:.2g} > {args.rtol:g})")
    verdict = "reproduces" if not beyond else f"does not reproduce: {len(beyond)} beyond the tolerance"
    print(f"{compared} metrics compared with {args.rev} (relative tolerance {args.rtol:g}): {verdict}")
    return 1 if beyond else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
