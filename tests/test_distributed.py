"""Data-parallel training (params.yaml `scale`): two gloo ranks on this CPU, started by the pipeline's own elastic
launch, train the weights one process trains from the same global batches (tests/ddp_fit.py runs both)."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """world size -> kind -> the trained weights, the start and the validation loss (both kinds in one launch)."""
    out = {}
    for world in (1, 2):
        path = tmp_path_factory.mktemp("ddp") / f"world{world}.pt"
        done = subprocess.run([sys.executable, "-m", "tests.ddp_fit", "images,series", str(path), str(world)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        out[world] = torch.load(path, weights_only=True)
    return out


@pytest.mark.parametrize("kind", ["images", "series"])
def test_two_gloo_ranks_train_the_weights_one_process_trains(kind, trained):
    """images: the digits CNN with per-image augmentation (every rank draws the whole batch's), a ragged last batch
    of one row (one rank trains no row of it); series: an LSTM. Every parameter within 1e-5 after one epoch."""
    one, two = trained[1][kind], trained[2][kind]
    assert one["world"] == 1 and two["world"] == 2  # the second really ran as two ranks
    assert one["state_dict"].keys() == two["state_dict"].keys()
    for name, weights in one["state_dict"].items():
        gap = (weights - two["state_dict"][name]).abs().max().item()
        assert gap <= 1e-5, (name, gap)
    moved = max((w - one["start"][n]).abs().max().item() for n, w in one["state_dict"].items())
    assert moved > 1e-2  # the epoch trained: equal weights are not the untouched start
    assert abs(one["val_loss"] - two["val_loss"]) < 1e-5


def test_the_rank_slices_cover_the_batch_once_and_their_weights_make_the_batch_mean():
    from stages.core.epochs import rank_slice

    for rows, world in ((32, 2), (33, 2), (1, 2), (10, 3)):
        x, y = torch.arange(rows).float()[:, None], torch.arange(rows)
        parts = [rank_slice(x, y, rank, world) for rank in range(world)]
        real = [p for p in parts if p[2] > 0]
        assert torch.equal(torch.cat([p[1] for p in real]), y)  # every row once, in order
        assert sum(p[2] for p in parts) / world == 1.0  # DDP's mean of the weighted slice means is the batch mean
        assert all(len(p[1]) == 1 for p in parts if p[2] == 0)  # an empty slice still joins with one row, weight 0


def test_a_scale_of_several_nodes_without_the_rendezvous_variables_names_them(monkeypatch):
    from stages.infra import launch
    from stages.infra.config import Scale
    from stages.infra.errors import PipelineError

    for name in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    with pytest.raises(PipelineError, match="missing: MASTER_PORT, NODE_RANK"):
        launch.rendezvous(Scale(nproc_per_node=1, nnodes=2))
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.setenv("NODE_RANK", "2")
    with pytest.raises(PipelineError, match=r"NODE_RANK must be in 0..1 \(scale.nnodes\), got 2"):
        launch.rendezvous(Scale(nproc_per_node=1, nnodes=2))
    assert launch.rendezvous(Scale(nproc_per_node=4, nnodes=1))["rdzv_endpoint"] == "127.0.0.1:0"  # a free port
