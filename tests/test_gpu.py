"""The CUDA training path: no host sync inside an epoch, a captured step, and training that still learns.

Marked `gpu`; every test skips on a machine without CUDA, so `python -m pytest` passes on CPU CI. Run them on a
GPU with `python -m pytest -m gpu` (bench/gpu_check.sh does).
"""
import functools

import pytest
import torch

from stages.core.models import build_model
from stages.core.training import epoch_runner, fit, loss_for, make_optimizer, seed_everything
from stages.infra.config import Train
from stages.kinds.images.train import augment, elastic_field

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")
DIGITS_AUGMENT = functools.partial(augment, flip=False, crop_scale=(0.85, 1.0), rotation=10.0, jitter=0.0,
                                   elastic=3.0, elastic_sigma=6.0, mean=[0.13], std=[0.31])  # params.yaml digits


def digits_like(n=300, seed=0):
    """Images whose class is where a bright square sits: learnable in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.2
    for i, label in enumerate(y.tolist()):
        row, col = divmod(label, 5)
        x[i, 0, 4 + 10 * row: 12 + 10 * row, 2 + 5 * col: 7 + 5 * col] += 1.0
    return (x - 0.13) / 0.31, y


def epochs_for(model_name="cnn2", n=300, batch=32, augment_fn=DIGITS_AUGMENT, capture=True):
    seed_everything(0)
    x, y = (t.to(CUDA) for t in digits_like(n))
    config = {"in_channels": 1, "num_classes": 10, "image_size": 28} | ({"dropout": 0.2} if model_name == "cnn2" else {})
    model = build_model("images", model_name, config).to(CUDA)
    cfg = Train(lr=0.001, batch_size=batch, epochs=1, patience=1, weight_decay=0.0, lr_schedule="constant")
    optimizer = make_optimizer(model.parameters(), cfg, CUDA)
    return epoch_runner(model, x, y, loss_for(y), optimizer, batch, seed_everything(0), augment_fn, capture)


@pytest.mark.parametrize("capture", [True, False], ids=["graph", "eager"])
def test_an_epoch_never_waits_for_the_gpu(capture):
    epochs = epochs_for(capture=capture)
    assert (epochs.graph is not None) == capture, epochs.describe()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host sync (copy from pageable memory, .item(), ...) raises
    try:
        for _ in range(2):
            loss, accuracy = epochs.epoch()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(loss) and 0 <= accuracy.item() <= 1


def test_warm_up_leaves_weights_and_adam_as_they_were():
    seed_everything(0)
    model = build_model("images", "cnn", {"in_channels": 1, "num_classes": 10, "image_size": 28}).to(CUDA)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = (t.to(CUDA) for t in digits_like(100))
    cfg = Train(lr=0.01, batch_size=32, epochs=1, patience=1, weight_decay=0.0, lr_schedule="constant")
    optimizer = make_optimizer(model.parameters(), cfg, CUDA)
    epochs = epoch_runner(model, x, y, loss_for(y), optimizer, 32, seed_everything(0), DIGITS_AUGMENT)
    assert epochs.graph is not None, epochs.describe()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert all(float(v.abs().max()) == 0 for s in optimizer.state.values() for v in s.values())
    assert (epochs.batch, epochs.steps, epochs.dropped) == (32, 3, 4)  # the ragged 4 of each epoch are dropped


def test_replays_train_the_model_and_follow_the_learning_rate():
    epochs = epochs_for(model_name="cnn")
    weights = [p.detach().clone() for p in epochs.model.parameters()]
    epochs.epoch()
    assert all(not torch.equal(w, p) for w, p in zip(weights, epochs.model.parameters()))
    for group in epochs.optimizer.param_groups:
        group["lr"] = 0.0  # what a scheduler does between epochs: the graph must see it
    frozen = [p.detach().clone() for p in epochs.model.parameters()]
    epochs.epoch()
    assert all(torch.equal(w, p) for w, p in zip(frozen, epochs.model.parameters()))


def test_fit_on_cuda_learns_every_kind():
    """Images (augmented), a forecaster and a language model train through the CUDA path and learn."""
    x, y = digits_like(400)
    cases = [
        ("images", "cnn2", {"in_channels": 1, "num_classes": 10, "image_size": 28, "dropout": 0.2},
         (x[:320], y[:320]), (x[320:], y[320:]), DIGITS_AUGMENT),
        ("series", "gru", {"input_size": 1, "hidden_size": 16, "num_layers": 1, "dropout": 0.0, "output_size": 1},
         *series_like(), None),
        ("text", "lstm", {"vocab_size": 20, "embedding_dim": 8, "hidden_size": 16, "num_layers": 1, "dropout": 0.0},
         *text_like(), None),
    ]
    for kind, name, config, train, val, augment_fn in cases:
        generator = seed_everything(0)
        model = build_model(kind, name, config).to(CUDA)
        cfg = Train(lr=0.01, batch_size=32, epochs=8, patience=8, weight_decay=0.0, lr_schedule="cosine")
        best, history = fit(model, tuple(t.to(CUDA) for t in train), tuple(t.to(CUDA) for t in val), cfg, generator,
                            augment=augment_fn)
        assert history[-1]["train_loss"] < history[0]["train_loss"], (kind, history)
        assert best["val_loss"] == min(h["val_loss"] for h in history)
        assert all(isinstance(h["train_loss"], float) and isinstance(h["lr"], float) for h in history)


def series_like():
    t = torch.arange(300.0)
    wave = torch.sin(t / 6)
    x = torch.stack([wave[i: i + 12] for i in range(280)])[:, :, None]
    y = wave[12:292][:, None]
    return (x[:240], y[:240]), (x[240:], y[240:])


def text_like():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 20, (300, 6), generator=g)
    y = (x[:, -1] + 1) % 20  # the next word follows the last one
    return (x[:240], y[:240]), (x[240:], y[240:])


def test_augment_on_cuda_draws_on_the_device():
    g = torch.Generator(device=CUDA).manual_seed(0)
    x = torch.rand(1, 1, 28, 28, device=CUDA).repeat(8, 1, 1, 1)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = DIGITS_AUGMENT(x, g)
        field = elastic_field(4, 28, 28, 2.0, 4.0, g)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert out.device.type == "cuda" and out.shape == x.shape and torch.isfinite(out).all()
    assert len({tuple(o.flatten().round(decimals=4).tolist()) for o in out}) == 8  # one draw per image
    pixels = field * 14
    assert torch.allclose(pixels.abs().amax(dim=(1, 2, 3)), torch.full((4,), 2.0, device=CUDA))
    everything_off = augment(x, g, flip=False, crop_scale=(1.0, 1.0), rotation=0.0, elastic=0.0, elastic_sigma=4.0,
                             jitter=0.0, mean=[0.5], std=[0.5])
    torch.testing.assert_close(everything_off, x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind, name, config, data", [
    ("images", "cnn2", {"in_channels": 1, "num_classes": 10, "image_size": 28, "dropout": 0.2}, digits_like),
    ("series", "gru", {"input_size": 1, "hidden_size": 16, "num_layers": 1, "dropout": 0.0, "output_size": 1},
     lambda: series_like()[0]),
    ("text", "lstm", {"vocab_size": 20, "embedding_dim": 8, "hidden_size": 16, "num_layers": 1, "dropout": 0.5},
     lambda: text_like()[0]),
], ids=["images-cnn2", "series-gru", "text-lstm"])
def test_the_step_of_every_kind_is_captured(kind, name, config, data):
    seed_everything(0)
    x, y = (t.to(CUDA) for t in data())
    model = build_model(kind, name, config).to(CUDA)
    cfg = Train(lr=0.001, batch_size=32, epochs=1, patience=1, weight_decay=0.0, lr_schedule="constant")
    epochs = epoch_runner(model, x, y, loss_for(y), make_optimizer(model.parameters(), cfg, CUDA), 32, seed_everything(0))
    assert epochs.graph is not None, epochs.describe()
    loss, _ = epochs.epoch()
    assert torch.isfinite(loss)


def test_bf16_autocast_for_image_batches_only():
    """The shared step's autocast: image logits come out in bf16, forecasts stay float32 (docs/gpu.md says why)."""
    from stages.core.inference import autocast

    cnn = build_model("images", "cnn", {"in_channels": 1, "num_classes": 10, "image_size": 28}).to(CUDA)
    gru = build_model("series", "gru", {"input_size": 1, "hidden_size": 8, "num_layers": 1, "dropout": 0.0,
                                        "output_size": 1}).to(CUDA)
    images, windows = torch.zeros(2, 1, 28, 28, device=CUDA), torch.zeros(2, 12, 1, device=CUDA)
    with autocast(CUDA, images):
        assert cnn(images).dtype == torch.bfloat16
    with autocast(CUDA, windows):
        assert gru(windows).dtype == torch.float32
