#!/usr/bin/env bash
# GPU check: on a CUDA machine that has torch but neither dvc nor mlflow and no network, install the wheels
# brought along, run the gpu tests, the full-size training-loop bench, the digits recipe's time to 98.5% validation
# accuracy, and the whole default pipeline forced on CUDA, printing progress and per-stage wall times as it goes
# (a run cut at its limit may return nothing else). Measured runs: docs/gpu.md.
#
# Usage, from the repo root:  bash bench/gpu_check.sh [WHEELS_DIR] [OUT_DIR]     (defaults: .whl, $OUT or /tmp/gpu_check)
#
# Before, on a machine with a network and the project's venv (docs/gpu.md, "Checking a GPU machine"):
#   ../shared/device/make-wheel-bundle.sh .whl, then delete the team and test wheels that the pipeline does not
#   import (the list in docs/gpu.md), which keeps .whl near 34 MB;
#   a CPU `dvc repro`, so that data/raw holds the downloads (pvlib and konlpy are too big to bring: the pipeline
#   runs here from preprocess on) and data/prepared/digits the recipe's data.
# Environment (to rerun a part): CHECK_STEPS (default "tests bench recipe pipeline"), BENCH_ARGS (the bench's
# options), RECIPE_ARGS (bench.gpu_recipe's), REPRO_TARGETS (default: preprocess@ every task in params.yaml; the
# pipeline runs them and all below them).
# Writes to OUT_DIR: check.log (this output), stage_times.txt (wall seconds of every stage process), bench.txt,
# metrics_gpu.tgz (metrics/, the histories and dvc.lock after the GPU run) and compare.txt (each test metric as
# metrics/ held it before the run, i.e. the CPU run's, against the GPU run's).
set -uo pipefail
WHL=$(realpath "${1:-.whl}")
OUT_DIR=$(realpath -m "${2:-${OUT:-/tmp/gpu_check}}")
mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/check.log") 2>&1
# Bytecode stays on, and the installed wheels are compiled once, in parallel, right after the install: otherwise
# the first stage processes compile mlflow, sqlalchemy and alembic from source.
export PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1
T0=$SECONDS
FAILED=()
WORK=$(mktemp -d)
say() { echo "== [$((SECONDS - T0)) s] $*"; }
step() {  # step NAME SECONDS COMMAND...: run with a time limit, remember failures, keep going
  local name=$1 limit=$2; shift 2
  say "$name (limit $limit s)"
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  [ $rc -eq 0 ] || { FAILED+=("$name (exit $rc$([ $rc -eq 124 ] && echo ', time limit'))"); say "$name FAILED: exit $rc"; }
  say "$name done"
}

say "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
nproc
PY=$(python3 -c 'import sys; print(sys.executable)')
"$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda,
"|", torch.cuda.get_device_name() if torch.cuda.is_available() else "NO CUDA DEVICE")'

say "install $(ls "$WHL"/*.whl | wc -l) wheels from $WHL"
SITE=$(mktemp -d)
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHL"/*.whl \
  || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
say "compile the installed wheels to bytecode"
"$PY" -m compileall -q -j 0 "$SITE" > /dev/null || true
BIN=$(mktemp -d)
export PATH=$BIN:$PATH
# `python` for DVC's stage commands: a wrapper script (a symlink to python3 would lose the image's virtualenv)
# that also records each stage process's wall time.
cat > "$BIN/python" <<EOF
#!/bin/sh
start=\$(date +%s.%N)
"$PY" "\$@"
rc=\$?
case "\$*" in -m\ stages.*) echo "\$start \$(date +%s.%N) \$rc \${*#-m stages.}" >> "$WORK/stage_times.raw"
  echo "== stage \${*#-m stages.}: \$(awk "BEGIN { printf \\"%.1f\\", \$(date +%s.%N) - \$start }") s, exit \$rc";; esac
exit \$rc
EOF
printf '#!/bin/sh\nexec "%s" -m dvc "$@"\n' "$PY" > "$BIN/dvc"
chmod +x "$BIN/python" "$BIN/dvc"
"$PY" -c 'import dvc, mlflow; print("dvc", dvc.__version__, "| mlflow", mlflow.__version__)' || FAILED+=("imports")

STEPS=" ${CHECK_STEPS:-tests bench recipe pipeline} "
if [[ $STEPS == *" tests "* ]]; then
  step "pytest -m gpu" 120 "$PY" -m pytest -q -m gpu -p no:cacheprovider -rA tests/test_gpu.py
fi

if [[ $STEPS == *" bench "* ]]; then  # batch sizes that divide 60,000 drop no image of an epoch
  step "bench: 60,000 digits" 150 "$PY" -m bench.train_loop --device cuda \
    ${BENCH_ARGS:---size 60000 --epochs 3 --batch-sizes 32 1000 2000 4000 6000}
  sleep 1; grep -A20 '^loop ' "$OUT_DIR/check.log" | head -13 > "$OUT_DIR/bench.txt"
fi

if [[ $STEPS == *" recipe "* ]]; then  # the digits CNN reaches 98.5% validation accuracy on CPU (CNN2 tops out below)
  step "recipe: time to 98.5% validation accuracy" 120 "$PY" -m bench.gpu_recipe \
    ${RECIPE_ARGS:---model cnn --batch-sizes 32 64 128 --lrs 0.001 0.002 0.004 --seeds 0 1}
fi

[[ $STEPS == *" pipeline "* ]] || { say "finished in $((SECONDS - T0)) s; failed: ${FAILED[*]:-none}"; exit ${#FAILED[@]}; }
say "pipeline: dvc repro -f from preprocess on (data/raw from a CPU run)"
tar czf "$WORK/metrics_cpu.tgz" metrics
if ! git rev-parse --show-toplevel 2>/dev/null | grep -qx "$PWD"; then  # DVC wants its own git repo here
  if command -v git >/dev/null; then
    git init -q && git add -A && git -c user.name=gpu-check -c user.email=gpu-check@localhost commit -qm "gpu check" \
      || echo "git init failed"
  else
    printf '#!/bin/sh\nexit 1\n' > "$BIN/git" && chmod +x "$BIN/git"
    printf '[core]\n    no_scm = true\n' >> .dvc/config.local
    echo "no git here: DVC runs with core.no_scm"
  fi
fi
rm -f "$WORK/stage_times.raw"
TASKS=${REPRO_TARGETS:-$("$PY" -c 'import yaml; print(" ".join("preprocess@" + t for t in yaml.safe_load(open("params.yaml"))["tasks"]))')}
REPRO_START=$SECONDS
step "dvc repro -f --downstream $TASKS" 300 dvc repro -f --downstream $TASKS
say "dvc repro took $((SECONDS - REPRO_START)) s"

grep -h "^train@.* in main()\|^cuda: .*warm-up and capture\|^Running stage" "$OUT_DIR/check.log" | tail -60
tar czf "$OUT_DIR/metrics_gpu.tgz" metrics plots/*/histories dvc.lock 2>/dev/null
"$PY" - "$OUT_DIR" "$WORK" <<'EOF'
import json, sys, tarfile
from collections import defaultdict
from pathlib import Path
out, work = Path(sys.argv[1]), Path(sys.argv[2])
raw = work / "stage_times.raw"
if raw.exists():
    rows, kinds = [], defaultdict(float)
    for line in raw.read_text().splitlines():
        start, end, rc, stage = line.split(" ", 3)
        seconds = float(end) - float(start)
        rows.append(f"{seconds:7.1f} s  exit {rc}  {stage}")
        kinds[stage.split()[0]] += seconds
    text = "\n".join(rows + ["", "by stage kind: " + ", ".join(f"{k} {v:.0f} s" for k, v in kinds.items()),
                              f"sum of stage processes: {sum(kinds.values()):.0f} s"])
    (out / "stage_times.txt").write_text(text + "\n")
    print(text)
def flat(node, prefix=""):
    if isinstance(node, dict):
        return {k: v for key, sub in node.items() for k, v in flat(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}
cpu = {}
with tarfile.open(work / "metrics_cpu.tgz") as tar:
    for member in tar.getmembers():
        if member.name.endswith(".json"):
            cpu[member.name] = flat(json.load(tar.extractfile(member)))
lines = [f"{'metric':<60s} {'cpu':>10s} {'gpu':>10s}"]
for path in sorted(Path("metrics").rglob("*.json")):
    gpu = flat(json.loads(path.read_text()))
    for key, value in gpu.items():
        if isinstance(value, (int, float)) and not any(p in key for p in ("precision.", "recall.")):
            before = cpu.get(str(path), {}).get(key)
            lines.append(f"{str(path)[8:-5] + ' ' + key:<60s} {before if before is None else round(before, 4)!s:>10s} "
                         f"{round(value, 4):>10}")
(out / "compare.txt").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
say "finished in $((SECONDS - T0)) s; failed: ${FAILED[*]:-none}"
[ ${#FAILED[@]} -eq 0 ]
