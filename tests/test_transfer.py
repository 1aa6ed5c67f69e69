"""Freezing is real: extract changes only the new head; finetune changes only the last N blocks and the head."""
import pytest
import torch
from torch import nn

from stages.config import Train
from stages.errors import PipelineError
from stages.models import build_model
from stages.training import fit, seed_everything
from stages.transfer import set_trainable

CONFIG = {"in_channels": 1, "num_classes": 10, "image_size": 28}


def train_phase(phase: str, unfreeze_blocks: int = 0) -> tuple[dict, dict]:
    """(weights before, weights after) a few epochs of the phase on random images."""
    generator = seed_everything(0)
    model = build_model("images", phase, CONFIG)
    trainable = set_trainable(model, phase, unfreeze_blocks)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    cfg = Train(lr=0.01, batch_size=8, epochs=3, patience=10, weight_decay=0.0, lr_schedule="constant")
    fit(model, (x, y), (x[:8], y[:8]), nn.CrossEntropyLoss(), cfg, torch.device("cpu"), generator, parameters=trainable)
    return before, model.state_dict()


def changed(before: dict, after: dict) -> set[str]:
    return {k.split(".")[0] + (f".{k.split('.')[1]}" if k.startswith("blocks") else "")
            for k in before if not torch.equal(before[k], after[k])}


def test_extract_trains_only_the_new_head():
    assert changed(*train_phase("extract")) == {"head"}


@pytest.mark.parametrize("unfreeze, expected", [(1, {"blocks.1", "head"}), (2, {"blocks.0", "blocks.1", "head"})])
def test_finetune_trains_only_the_last_blocks_and_the_head(unfreeze, expected):
    assert changed(*train_phase("finetune", unfreeze)) == expected


def test_scratch_trains_everything():
    assert changed(*train_phase("scratch")) == {"blocks.0", "blocks.1", "head"}


def test_unfreezing_more_blocks_than_exist_names_the_param():
    with pytest.raises(PipelineError, match=r"transfer\.finetune\.unfreeze_blocks must be in 1\.\.2"):
        set_trainable(build_model("images", "finetune", CONFIG), "finetune", 3)
