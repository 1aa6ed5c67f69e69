"""tools/reproduces.py against the real `dvc metrics diff` in a throwaway DVC repo."""
import json
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).parents[1] / "tools" / "reproduces.py"


def run_tool(repo: Path, *args: str) -> tuple[int, str]:
    args = args if "--targets" in args else (*args, "--targets", "metrics.json")
    done = subprocess.run([sys.executable, str(TOOL), *args], cwd=repo, capture_output=True, text=True)
    return done.returncode, done.stdout


def test_the_reproduction_check_finds_no_difference_then_names_each_changed_metric(tmp_path):
    metrics = {"sarima": {"rmse": 15.934206434447402, "mae": 12.1}, "lstm": {"rmse": 19.5}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "dvc.yaml").write_text("metrics:\n  - metrics.json\n")
    for command in ("git init -q", f"{sys.executable} -m dvc init -q", "git add -A",
                    "git -c user.name=t -c user.email=t@t commit -qm metrics"):
        subprocess.run(command, shell=True, cwd=tmp_path, check=True)
    assert run_tool(tmp_path) == (0, "3 metrics compared with HEAD (relative tolerance 0): reproduces\n")

    metrics["sarima"]["rmse"] = 15.936  # the AVX-512 machine's SARIMA of issue 35
    metrics["lstm"]["rmse"] = 19.5 * (1 + 1e-9)
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    code, out = run_tool(tmp_path)
    assert code == 1
    assert "metrics.json: sarima.rmse: 15.934206434447402 in HEAD, 15.936 here (relative difference 0.00011 > 0)" in out
    assert "metrics.json: lstm.rmse: 19.5 in HEAD" in out and "sarima.mae" not in out
    assert out.endswith("3 metrics compared with HEAD (relative tolerance 0): does not reproduce: 2 beyond the "
                        "tolerance\n")
    code, out = run_tool(tmp_path, "--rtol", "1e-6")  # the 1e-9 change is within it, the SARIMA change is not
    assert code == 1 and "sarima.rmse" in out and "lstm.rmse" not in out
    assert run_tool(tmp_path, "no-such-rev")[0] == 2
