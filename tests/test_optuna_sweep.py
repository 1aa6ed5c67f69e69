"""tools/optuna_sweep.py's parts that need no DVC experiment (the 8-trial study runs in tests/test_pipeline.py)."""
import multiprocessing
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))
import optuna_sweep  # noqa: E402


def join_at_once(barrier, storage: str, results) -> None:
    import optuna  # noqa: F401  (imported before the barrier: the workers reach create_study together)

    barrier.wait()
    study = optuna_sweep.join_study("race", storage, "minimize")
    results.put(study.study_name)


def test_workers_started_at_once_on_a_new_database_all_join_one_study(tmp_path):
    """The CI failure of stop 40: the second worker's create_study lost the race for Optuna's tables."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    workers = [context.Process(target=join_at_once, args=(barrier, storage, results)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0] * 4
    assert sorted(results.get(timeout=5) for _ in workers) == ["race"] * 4
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["race"]


@pytest.mark.parametrize("text, message", [
    ("lr=log:0.1", "log needs <low>:<high>"),
    ("lr=uniform:0:1", "expected <key>=log|float|int"),
    ("lr", "expected <key>=log|float|int"),
])
def test_a_malformed_space_is_one_line_naming_it(text, message):
    with pytest.raises(SystemExit, match=message):
        optuna_sweep.parse_space(text)


def test_a_space_is_parsed_into_key_form_and_bounds():
    assert optuna_sweep.parse_space("wine.train.lr=log:0.001:0.03") == ("wine.train.lr", "log", ["0.001", "0.03"])
    assert optuna_sweep.parse_space("m=choice:lstm,gru") == ("m", "choice", ["lstm", "gru"])
