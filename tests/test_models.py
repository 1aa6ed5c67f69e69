"""Every model of models.py: output shape on a tiny batch, and a backward pass that reaches every weight."""
import pytest
import torch

from stages.core.models import SeedEnsemble, build_model, model_config

IMAGES = {"in_channels": 1, "num_classes": 10, "image_size": 28}
CASES = [  # (kind, name, config, input batch, output shape)
    ("series", "rnn", {"input_size": 2, "output_size": 2, "hidden_size": 8, "num_layers": 2, "dropout": 0.1},
     torch.randn(4, 12, 2), (4, 2)),
    ("series", "lstm", {"input_size": 1, "output_size": 1, "hidden_size": 8, "num_layers": 1, "dropout": 0.0},
     torch.randn(4, 12, 1), (4, 1)),
    ("series", "gru", {"input_size": 1, "output_size": 1, "hidden_size": 8, "num_layers": 1, "dropout": 0.0},
     torch.randn(4, 30, 1), (4, 1)),
    ("series", "hybrid_lstm", {"input_size": 1, "output_size": 1, "hidden_size": 8, "num_layers": 1, "dropout": 0.0,
                               "classical": {}}, torch.randn(4, 12, 1), (4, 1)),
    ("images", "cnn", IMAGES, torch.randn(4, 1, 28, 28), (4, 10)),
    ("images", "cnn2", IMAGES | {"dropout": 0.2}, torch.randn(4, 1, 28, 28), (4, 10)),
    ("images", "simple_cnn", IMAGES, torch.randn(4, 1, 28, 28), (4, 10)),
    ("images", "flower_cnn", {"in_channels": 3, "num_classes": 5, "image_size": 32}, torch.randn(2, 3, 32, 32), (2, 5)),
    ("images", "small_cnn", {"in_channels": 3, "num_classes": 5, "image_size": 48, "dropout": 0.3},
     torch.randn(2, 3, 48, 48), (2, 5)),
    ("images", "resnet18", {"num_classes": 10, "input_size": 32, "hidden_size": 16, "dropout": 0.5},
     torch.randn(2, 3, 32, 32), (2, 10)),
    ("text", "gru", {"vocab_size": 50, "embedding_dim": 8, "hidden_size": 16, "num_layers": 1, "dropout": 0.5},
     torch.randint(0, 50, (4, 10)), (4, 50)),
    ("text", "lstm", {"vocab_size": 50, "embedding_dim": 8, "hidden_size": 16, "num_layers": 2, "dropout": 0.2},
     torch.randint(0, 50, (4, 10)), (4, 50)),
    ("text", "rnn", {"vocab_size": 50, "embedding_dim": 16, "hidden_size": 16, "num_layers": 1, "dropout": 0.2,
                     "tie_embeddings": True}, torch.randint(0, 50, (4, 10)), (4, 50)),
]


@pytest.mark.parametrize("kind, name, config, x, shape", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_forward_shape_and_backward_reach_every_weight(kind, name, config, x, shape):
    torch.manual_seed(0)
    model = build_model(kind, name, config).train()
    out = model(x)
    assert out.shape == shape
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reached {missing}"


def test_model_config_takes_the_data_shape_and_only_the_params_the_model_accepts():
    shape = {"in_channels": 1, "num_classes": 10, "image_size": 28}
    assert model_config("images", "cnn", shape, {"dropout": 0.2}) == shape  # DigitsCNN has no dropout
    assert model_config("images", "cnn2", shape, {"dropout": 0.2}) == shape | {"dropout": 0.2}
    params = {"backbone": "vgg16", "input_size": 32, "hidden_size": 256, "dropout": 0.5}
    assert model_config("images", "vgg16", shape, params) == {"num_classes": 10, "input_size": 32,
                                                              "hidden_size": 256, "dropout": 0.5}


def test_an_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown model 'tcn' for a series task"):
        build_model("series", "tcn", {})


def test_a_hybrid_starts_at_its_classical_forecast_and_a_seed_ensemble_is_the_mean():
    config = {"input_size": 1, "output_size": 1, "hidden_size": 8, "num_layers": 1, "dropout": 0.0}
    torch.manual_seed(0)
    hybrid = build_model("series", "hybrid_gru", config | {"classical": {"log": True}})
    x = torch.randn(4, 12, 1)
    assert torch.equal(hybrid(x), torch.zeros(4, 1))  # no residual correction before training
    members = [build_model("series", "gru", config) for _ in range(3)]
    ensemble = SeedEnsemble(members)
    torch.testing.assert_close(ensemble(x), (members[0](x) + members[1](x) + members[2](x)) / 3)  # (4, 1)
    assert SeedEnsemble([hybrid, hybrid]).classical == {"log": True}


def test_tied_embeddings_share_one_matrix_and_need_equal_sizes():
    config = {"vocab_size": 50, "embedding_dim": 16, "hidden_size": 16, "num_layers": 1, "dropout": 0.0}
    untied, tied = build_model("text", "gru", config), build_model("text", "gru", config | {"tie_embeddings": True})
    assert tied.head.weight is tied.embedding.weight
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == 50 * 16
    copy = build_model("text", "gru", config | {"tie_embeddings": True})
    copy.load_state_dict(tied.state_dict())  # a checkpoint round trip keeps the two uses one matrix
    assert copy.head.weight is copy.embedding.weight and torch.equal(copy.head.weight, tied.embedding.weight)
    with pytest.raises(ValueError, match="embedding_dim = hidden_size"):
        build_model("text", "gru", config | {"hidden_size": 32, "tie_embeddings": True})


def test_the_model_names_params_yaml_accepts_are_the_models_that_build():
    """config.py holds the names a task's models may list (checked before any work, without importing torch);
    models.py holds the constructors: every name must build, and every constructor be reachable from a task."""
    from stages.core.models import IMAGENET_BACKBONES, _constructors
    from stages.infra.config import ImageTask, SeriesTask, TextTask

    accepted = {"series": set(SeriesTask.known_models), "text": set(TextTask.known_models),
                "images": {*ImageTask.known_models, *IMAGENET_BACKBONES}}  # transfer: its backbones
    for kind, names in accepted.items():
        assert set(_constructors(kind)) == names, kind
