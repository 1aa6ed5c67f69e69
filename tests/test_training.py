"""The shared training loop on tiny tensors."""
import functools

import pytest
import torch

from stages.core.inference import pick_device, predict
from stages.core.models import build_model
from stages.core.training import fit, seed_everything
from stages.infra.config import Train
from stages.infra.errors import PipelineError

CPU = torch.device("cpu")


def tiny_problem():
    x = torch.linspace(0, 1, 64).reshape(32, 2, 1)
    return (x[:24], x[:24, -1] * 2), (x[24:], x[24:, -1] * 2)


def train_once(epochs=20, patience=50, lr_schedule="constant"):
    generator = seed_everything(0)
    model = build_model("series", "gru", {"input_size": 1, "hidden_size": 4, "num_layers": 1, "dropout": 0.0,
                                          "output_size": 1})
    cfg = Train(lr=0.05, batch_size=8, epochs=epochs, patience=patience, weight_decay=0.0, lr_schedule=lr_schedule)
    best, history = fit(model, *tiny_problem(), cfg, generator)
    return model, best, history


def test_fit_learns_and_keeps_the_best_validation_epoch():
    model, best, history = train_once()
    val_losses = [h["val_loss"] for h in history]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert best["val_loss"] == min(val_losses)
    assert best["epoch"] == 1 + val_losses.index(min(val_losses))
    # The model handed back carries the best weights, not the last epoch's.
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, best["state_dict"][key])


def test_reruns_on_cpu_are_identical():
    _, _, first = train_once()
    _, _, second = train_once()
    assert first == second


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    _, best, history = train_once(epochs=200, patience=3)
    assert len(history) == best["epoch"] + 3 < 200


def test_predict_batches_cover_every_row():
    model, _, _ = train_once(epochs=2)
    x = torch.zeros(10, 2, 1)
    assert predict(model, x, batch_size=3, device=CPU).shape == (10, 1)


def test_cosine_schedule_decays_the_learning_rate_to_zero_over_the_epochs():
    _, _, constant = train_once(epochs=10)
    _, _, cosine = train_once(epochs=10, lr_schedule="cosine")
    assert [h["lr"] for h in constant] == [0.05] * 10
    lrs = [h["lr"] for h in cosine]
    assert lrs[0] == 0.05 and all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 0.05 * 0.03


def fit_with_validation(val):
    model = build_model("series", "gru", {"input_size": 1, "hidden_size": 4, "num_layers": 1, "dropout": 0.0,
                                          "output_size": 1})
    cfg = Train(lr=0.05, batch_size=8, epochs=5, patience=2, weight_decay=0.0, lr_schedule="constant")
    return fit(model, tiny_problem()[0], val, cfg, seed_everything(0))


def test_an_empty_validation_split_is_one_clear_error():
    train = tiny_problem()[0]
    with pytest.raises(PipelineError, match="validation split is empty"):
        fit_with_validation((train[0][:0], train[1][:0]))


def test_a_validation_loss_that_is_never_finite_is_one_clear_error():
    x, y = tiny_problem()[1]
    with pytest.raises(PipelineError, match="validation loss was never finite in 2 epochs"):
        fit_with_validation((x, torch.full_like(y, float("nan"))))




@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_asking_for_mps_without_it_names_the_param():
    with pytest.raises(PipelineError, match="device is mps"):
        pick_device("mps")


def test_cpu_training_keeps_the_ragged_last_batch_and_plain_adam():
    """The CUDA path drops the ragged batch and uses fused Adam; CPU keeps every batch and plain Adam."""
    from stages.core.training import epoch_runner, make_optimizer

    sizes = []
    model = torch.nn.Linear(2, 1)
    model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    cfg = Train(lr=0.01, batch_size=4, epochs=1, patience=1, weight_decay=0.0, lr_schedule="constant")
    optimizer = make_optimizer(model.parameters(), cfg, CPU)
    assert not optimizer.defaults["fused"] and not optimizer.defaults["capturable"]
    x = torch.randn(10, 2)
    epoch_runner(model, x, x[:, :1], torch.nn.MSELoss(), optimizer, 4, seed_everything(0)).stats()
    assert sizes == [4, 4, 2]


@pytest.mark.parametrize("kind, name, config, n", [
    ("images", "cnn2", {"in_channels": 1, "num_classes": 10, "image_size": 28, "dropout": 0.2}, 48),
    ("series", "gru", {"input_size": 1, "hidden_size": 8, "num_layers": 1, "dropout": 0.0, "output_size": 1}, 48),
], ids=["images-augmented", "series"])
def test_the_cuda_runner_trains_with_the_eager_loops_step(kind, name, config, n):
    """What the CUDA graph captures is stages/epochs.train_step: the CUDA runner's step, run eagerly on CPU with the
    same order (batch divides the set, so nothing is dropped), leaves bit-identical weights, loss and accuracy."""
    from stages.core.cuda_graph import CudaEpochs
    from stages.core.epochs import EagerEpochs
    from stages.core.models import build_model
    from stages.core.training import loss_for, make_optimizer
    from stages.kinds.images.train import augment

    g = torch.Generator().manual_seed(1)
    if kind == "images":
        x, y = torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
        aug = functools.partial(augment, flip=True, crop_scale=(0.85, 1.0), rotation=10.0, jitter=0.1, elastic=2.0,
                                elastic_sigma=4.0, mean=[0.0], std=[1.0])
    else:
        x, aug = torch.randn(n, 6, 1, generator=g), None
        y = x[:, -1]
    cfg = Train(lr=0.01, batch_size=8, epochs=1, patience=1, weight_decay=0.0, lr_schedule="constant")
    runs = []
    for runner in (EagerEpochs, CudaEpochs):
        torch.manual_seed(0)
        model = build_model(kind, name, config)
        optimizer = make_optimizer(model.parameters(), cfg, CPU)
        if runner is EagerEpochs:
            epochs = EagerEpochs(model, x, y, loss_for(y), optimizer, 8, torch.Generator().manual_seed(7), aug)
        else:
            epochs = CudaEpochs(model, x, y, loss_for(y), optimizer, 8, 7, aug, capture=False)
            assert (epochs.steps, epochs.dropped, epochs.graph) == (n // 8, 0, None)
        stats = [epochs.stats() for _ in range(2)]
        runs.append((stats, model.state_dict()))
    (eager_stats, eager_weights), (cuda_stats, cuda_weights) = runs
    assert eager_stats == cuda_stats
    for key, value in eager_weights.items():
        torch.testing.assert_close(cuda_weights[key], value, rtol=0, atol=0)
