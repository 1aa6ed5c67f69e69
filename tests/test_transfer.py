"""Freezing is real: extract changes only the new head; finetune changes only the last N blocks and the head."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from stages.core.models import build_model
from stages.core.training import fit, seed_everything
from stages.infra.config import Train
from stages.infra.errors import PipelineError
from stages.transfer import set_trainable

CONFIG = {"in_channels": 1, "num_classes": 10, "image_size": 28}


@dataclass(frozen=True)
class Split:  # the fields of params.yaml's transfer.preprocess that the split reads
    train_per_class: int
    val_per_class: int
    split_seed: int


IMAGENET_CONFIG = {"num_classes": 10, "input_size": 32, "hidden_size": 16, "dropout": 0.5}
# per network: its constructor config, the random images' shape, batch size (also the validation size), epochs;
# the ImageNet networks get fewer, smaller images to keep the unit suite fast
SETUPS = {"cnn": (CONFIG, (32, 1, 28, 28), 8, 3), "resnet18": (IMAGENET_CONFIG, (8, 3, 32, 32), 4, 2)}


def train_phase(phase: str, unfreeze_blocks: int = 0, backbone: str = "cnn") -> tuple[dict, dict]:
    """(weights and batch-norm statistics before, after) a few epochs of the phase on random images."""
    config, shape, batch_size, epochs = SETUPS[backbone]
    generator = seed_everything(0)
    model = build_model("images", backbone, config)
    trainable = set_trainable(model, phase, unfreeze_blocks)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(*shape), torch.randint(0, 10, (shape[0],))
    cfg = Train(lr=0.01, batch_size=batch_size, epochs=epochs, patience=10, weight_decay=0.0, lr_schedule="constant")
    fit(model, (x, y), (x[:batch_size], y[:batch_size]), cfg, generator, parameters=trainable)
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
    with pytest.raises(PipelineError, match=r"finetune\.unfreeze_blocks must be in 1\.\.2"):
        set_trainable(build_model("images", "cnn", CONFIG), "finetune", 3)


# --- the online path: torchvision ImageNet backbones on CIFAR-10 -------------------------------------------

@pytest.mark.parametrize("backbone", ["resnet18", "vgg16"])
def test_imagenet_backbones_have_five_blocks_and_the_original_head(backbone):
    model = build_model("images", backbone, IMAGENET_CONFIG)
    assert len(model.blocks) == 5
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert [m.out_features for m in model.head if isinstance(m, nn.Linear)] == [16, 10]


def test_imagenet_classifier_upsamples_to_its_input_size():
    model = build_model("images", "resnet18", IMAGENET_CONFIG | {"input_size": 64}).eval()
    seen = []
    model.blocks[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape))
    model(torch.zeros(1, 3, 32, 32))
    assert seen == [(1, 3, 64, 64)]


def test_resnet_extract_freezes_weights_and_batchnorm_statistics():
    """BatchNorm running means are buffers, not parameters: a frozen block must not update them either."""
    assert changed(*train_phase("extract", backbone="resnet18")) == {"head"}


def test_resnet_finetune_trains_only_the_last_block_and_the_head():
    assert changed(*train_phase("finetune", 1, backbone="resnet18")) == {"blocks.4", "head"}


def test_cifar10_is_downloaded_checked_unpacked_and_split(tmp_path, monkeypatch, file_server):
    """A tiny archive in the official layout, served over HTTP: the real download, md5 check, unpacking, reader
    and few-labels split, with the official test batch as the test split."""
    import hashlib
    import io
    import pickle
    import tarfile

    from stages import download
    from stages.infra import paths
    from stages.infra.config import Download
    from stages.kinds.images.prepare import few_labels_split, found, read_cifar10

    rng = np.random.default_rng(0)
    members = {"batches.meta": {b"label_names": [b"airplane", b"automobile", b"bird"]}}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        members[name] = {b"data": rng.integers(0, 256, (6, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 0, 1, 2]}
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, content in members.items():
            blob = pickle.dumps(content)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    served = tmp_path / "served"
    served.mkdir()
    (served / "cifar-10-python.tar.gz").write_bytes(archive.getvalue())
    monkeypatch.chdir(tmp_path)
    with file_server(served) as server:
        cfg = Download(bundled="none", url=server.url("cifar-10-python.tar.gz"),
                       checksum="md5:" + hashlib.md5(archive.getvalue()).hexdigest())
        paths.raw("transfer").mkdir(parents=True)
        download.from_url("transfer", cfg, paths.raw("transfer"))

    assert [p.name for p in paths.raw("transfer").iterdir()] == ["unpacked"]  # the archive is unpacked in its place
    (images, labels), test, classes = read_cifar10(found(paths.raw("transfer"), "cifar-10-batches-py"))
    assert classes == ["airplane", "automobile", "bird"] and images.shape == (30, 32, 32, 3)
    # channel-first rows of 1024 red, then green, then blue pixels become (H, W, C)
    first = members["data_batch_1"][b"data"][0]
    assert images[0, 0, 1, 2] == first[2 * 1024 + 1] and images[0, 31, 31, 0] == first[1023]
    split = few_labels_split(images, labels, Split(train_per_class=8, val_per_class=2, split_seed=0), test)
    assert np.bincount(split["y_train"]).tolist() == [8, 8, 8] and np.bincount(split["y_val"]).tolist() == [2, 2, 2]
    assert split["x_test"] is test[0]  # the official test batch, not a share of the training images


def test_corrupt_cifar_batch_is_named(tmp_path):
    from stages.kinds.images.prepare import read_cifar10

    (tmp_path / "batches.meta").write_bytes(b"not a pickle")
    with pytest.raises(PipelineError, match="batches.meta: missing or corrupt"):
        read_cifar10(tmp_path)



def test_imagenet_weights_land_in_the_matching_blocks(tmp_path, monkeypatch):
    """torchvision's weight file (here a stand-in in the torch hub cache, so no network is needed) is regrouped
    into our 5 blocks: layer4's first conv is block 4's."""
    import torchvision

    from stages.transfer import imagenet_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / Path(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url).name
    cached.parent.mkdir(parents=True)
    saved = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(saved, cached)
    blocks = imagenet_weights("resnet18")
    model = build_model("images", "resnet18", IMAGENET_CONFIG)
    model.blocks.load_state_dict(blocks)  # strict: every key of our blocks is there
    assert torch.equal(model.blocks[4][0].conv1.weight, saved["layer4.0.conv1.weight"])
    assert torch.equal(model.blocks[0][1].running_mean, saved["bn1.running_mean"])


@pytest.mark.parametrize("train, val, official_test, ok", [(3, 1, True, True), (3, 2, True, False),
                                                             (2, 1, False, True), (3, 1, False, False)])
def test_labelled_images_per_class_must_fit_the_smallest_class(train, val, official_test, ok):
    """4 images per class: with an official test set all 4 may be labelled; without one, some must stay for it."""
    from stages.kinds.images.prepare import few_labels_split

    labels = np.repeat(np.arange(3), 4)
    images = np.zeros((12, 2, 2), dtype=np.uint8)
    test = (images[:3], labels[:3]) if official_test else None
    cfg = Split(train_per_class=train, val_per_class=val, split_seed=0)
    if ok:
        split = few_labels_split(images, labels, cfg, test)
        assert len(split["y_train"]) == 3 * train and len(split["y_val"]) == 3 * val
    else:
        with pytest.raises(PipelineError, match=r"preprocess\.train_per_class \+ val_per_class is"):
            few_labels_split(images, labels, cfg, test)
