"""Every model of the pipeline as a plain nn.Module, and build_model(), the one place that picks one by name.

Shapes: B batch, T time steps, F features, H hidden units.
"""
import functools
import inspect
import types

import torch
from torch import nn

RECURRENT_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentRegressor(nn.Module):
    """RNN/LSTM/GRU over a window, then a linear head on the last hidden state: the forecasting exercise's model."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float, output_size: int):
        super().__init__()
        self.rnn = RECURRENT_CELLS[cell](
            input_size, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        self.head = nn.Linear(hidden_size, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, F)
        out, _ = self.rnn(x)  # (B, T, H)
        return self.head(out[:, -1])  # (B, output_size)


class HybridRegressor(RecurrentRegressor):
    """The network of a hybrid forecaster (Zhang 2003; stages/kinds/series/data.py): the same recurrent regressor, over windows
    of a classical model's past one-step residuals (scaled), forecasting the next residual. `classical` is that
    model, fitted once and then fixed (plain data: saved in the checkpoint's config). The head starts at zero, so
    before training the hybrid forecasts exactly what the classical model does, and moves away only as far as
    training on the residuals takes it."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float,
                 output_size: int, classical: dict):
        super().__init__(cell, input_size, hidden_size, num_layers, dropout, output_size)
        self.classical = classical
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)


class SeedEnsemble(nn.Module):
    """The mean of several trained copies of one model (seeds): the cheapest forecast combination. Carries the
    members' `classical` part, if they have one (hybrids share it: it does not depend on the seed)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)
        if hasattr(members[0], "classical"):
            self.classical = members[0].classical

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: whatever each member takes, (B, T, F) for forecasts
        return torch.stack([m(x) for m in self.members]).mean(0)  # (B, output_size)


class DigitsCNN(nn.Module):
    """The two-conv MNIST CNN of the original exercise: 32 and 64 3x3 filters with padding 1, max-pooling."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int):
        super().__init__()
        self.blocks = nn.Sequential(
            nn.Sequential(nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),  # (B, 32, 14, 14)
            nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),  # (B, 64, 7, 7)
        )
        self.head = nn.Linear(64 * (image_size // 4) ** 2, num_classes)  # 7*7*64 = 3136 -> 10 at 28 px

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, 28, 28)
        return self.head(self.blocks(x).flatten(1))  # (B, num_classes)


class DigitsCNN2(nn.Module):
    """The three-conv CNN with dropout and a 625-unit hidden layer (the original's CNN2)."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, dropout: float):
        super().__init__()
        self.blocks = nn.Sequential(
            nn.Sequential(nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(dropout)),
            nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(dropout)),
            # padding=1 in the pool rounds 7 up to 4 rather than down to 3, as the original did: (B, 128, 4, 4)
            nn.Sequential(nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, padding=1), nn.Dropout(dropout)),
        )
        side = (image_size // 4) // 2 + 1  # 28 -> 14 -> 7 -> 4
        self.head = nn.Sequential(nn.Linear(128 * side * side, 625), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(625, num_classes))  # 4*4*128 = 2048 -> 625 -> 10

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, 28, 28)
        return self.head(self.blocks(x).flatten(1))  # (B, num_classes)


class SimpleCNN(nn.Module):
    """Two unpadded convolutions, each followed by pooling, then a 128-unit hidden layer."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int):
        super().__init__()
        self.blocks = nn.Sequential(
            nn.Sequential(nn.Conv2d(in_channels, 32, 3), nn.ReLU(), nn.MaxPool2d(2)),  # 28 -> 26 -> (B, 32, 13, 13)
            nn.Sequential(nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2)),  # 13 -> 11 -> (B, 64, 5, 5)
        )
        side = ((image_size - 2) // 2 - 2) // 2
        self.head = nn.Sequential(nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, 28, 28)
        return self.head(self.blocks(x).flatten(1))  # (B, num_classes)


class FlowerCNN(nn.Module):
    """The original flowers model: conv 32, conv 64, pooling, a 128-unit layer; most weights sit in that layer."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int):
        super().__init__()
        self.blocks = nn.Sequential(
            nn.Sequential(nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),  # (B, 32, 90, 90)
            nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),  # (B, 64, 45, 45)
        )
        side = image_size // 4
        self.head = nn.Sequential(nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, 180, 180)
        return self.head(self.blocks(x).flatten(1))  # (B, num_classes)


class SmallCNN(nn.Module):
    """Four conv-batchnorm blocks and global average pooling: fewer weights than FlowerCNN and no fixed input size."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, dropout: float):
        super().__init__()
        widths = [in_channels, 32, 64, 128, 256]
        self.blocks = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2))
            for a, b in zip(widths, widths[1:])
        ])  # 180 -> 90 -> 45 -> 22 -> 11: (B, 256, 11, 11)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(widths[-1], num_classes))  # (B, 256) -> (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        return self.head(self.blocks(x))


IMAGENET_BACKBONES = ("vgg16", "resnet18")


def imagenet_blocks(network: nn.Module) -> nn.Sequential:
    """The convolutional part of a torchvision VGG16 or ResNet-18, regrouped into 5 blocks, so unfreezing "the
    last N blocks" means the same for both (VGG16: conv...conv, pool, each halving the image; ResNet-18: the
    stem, which quarters it, then layer1..layer4). The modules are the network's own: its ImageNet weights
    come along."""
    if hasattr(network, "features"):  # VGG16: a block ends at each of the 5 max-pool layers
        blocks, current = [], []
        for layer in network.features:
            current.append(layer)
            if isinstance(layer, nn.MaxPool2d):
                blocks.append(nn.Sequential(*current))
                current = []
        return nn.Sequential(*blocks)
    n = network
    return nn.Sequential(nn.Sequential(n.conv1, n.bn1, n.relu, n.maxpool), n.layer1, n.layer2, n.layer3, n.layer4)


class ImageNetClassifier(nn.Module):
    """A torchvision VGG16 or ResNet-18 body and the original exercise's new head: Flatten, Dense 256, Dropout 0.5,
    Dense 10. Batches are upsampled to `input_size` on the device (32: CIFAR's own size, as in the original).

    Blocks whose parameters are all frozen stay in eval mode when the model trains, so batch-norm statistics
    freeze with the weights (as Keras does for a frozen BatchNormalization layer)."""

    def __init__(self, backbone: str, num_classes: int, input_size: int, hidden_size: int, dropout: float):
        super().__init__()
        import torchvision

        self.input_size = input_size
        if backbone == "vgg16":  # its conv layers only: VGG16's own classifier (120 M weights) would be thrown away
            network = types.SimpleNamespace(features=torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"]))
        else:
            network = torchvision.models.resnet18(weights=None)
        self.blocks = imagenet_blocks(network)
        # VGG16 keeps the 512 x (input/32)^2 feature map as the original's Flatten did (1x1 at 32 px);
        # ResNet-18 averages it to 512, as it was trained to.
        pool = [nn.AdaptiveAvgPool2d(1)] if backbone == "resnet18" else []
        features = 512 if backbone == "resnet18" else 512 * (input_size // 32) ** 2
        self.head = nn.Sequential(*pool, nn.Flatten(), nn.Linear(features, hidden_size), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(hidden_size, num_classes))

    def train(self, mode: bool = True):
        super().train(mode)
        for block in self.blocks:
            if not any(p.requires_grad for p in block.parameters()):
                block.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, H, W), H = W = 32 for CIFAR-10
        if x.shape[-1] != self.input_size:
            x = nn.functional.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                                          align_corners=False)  # (B, 3, input_size, input_size)
        return self.head(self.blocks(x))  # (B, num_classes)


class RecurrentLanguageModel(nn.Module):
    """Embedding, RNN/LSTM/GRU, and a softmax layer over the vocabulary on the last step: next-word prediction.

    tie_embeddings: the softmax layer's weight matrix is the embedding matrix (Press & Wolf 2017; Inan et al. 2017),
    one V x H matrix instead of two, which helps on small corpora; it needs embedding_dim = hidden_size. As in the
    Transformer (Vaswani et al. 2017, section 3.4), the shared matrix starts N(0, 1/H), which keeps the first logits
    small, and the embeddings are multiplied by sqrt(H) on the way in, so the RNN sees inputs of the untied model's
    N(0, 1) scale (starting it uniform in +-0.1 instead, with no scaling, left the validation loss higher:
    docs/tuning.md).
    """

    def __init__(self, cell: str, vocab_size: int, embedding_dim: int, hidden_size: int, num_layers: int,
                 dropout: float, tie_embeddings: bool = False):
        super().__init__()
        if tie_embeddings and embedding_dim != hidden_size:
            raise ValueError(f"tied embeddings need embedding_dim = hidden_size, got {embedding_dim} and {hidden_size}")
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.rnn = RECURRENT_CELLS[cell](embedding_dim, hidden_size, num_layers, batch_first=True,
                                         dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)
        self.input_scale = embedding_dim ** 0.5 if tie_embeddings else None
        if tie_embeddings:
            with torch.no_grad():
                nn.init.normal_(self.embedding.weight, std=embedding_dim ** -0.5)
                self.embedding.weight[0].zero_()  # <pad> starts as the zero vector, as nn.Embedding makes it
            self.head.weight = self.embedding.weight  # (V, H): one parameter, two uses

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T) word ids, pre-padded with 0
        embedded = self.embedding(x)  # (B, T, E)
        if self.input_scale is not None:
            embedded = embedded * self.input_scale
        out, _ = self.rnn(embedded)  # (B, T, H)
        return self.head(self.dropout(out[:, -1]))  # (B, V) logits of the next word


def _constructors(kind: str) -> dict:
    """Model name -> constructor, for the tasks of one kind (a recurrent cell name means a different model for
    series and for text)."""
    if kind == "series":
        return {cell: functools.partial(RecurrentRegressor, cell) for cell in RECURRENT_CELLS} | {
            f"hybrid_{cell}": functools.partial(HybridRegressor, cell) for cell in RECURRENT_CELLS}
    if kind == "text":
        return {cell: functools.partial(RecurrentLanguageModel, cell) for cell in RECURRENT_CELLS}
    if kind != "images":
        raise ValueError(f"no models for kind {kind!r} (series, images, text)")
    return {"cnn": DigitsCNN, "cnn2": DigitsCNN2, "simple_cnn": SimpleCNN, "flower_cnn": FlowerCNN, "small_cnn": SmallCNN,
            **{name: functools.partial(ImageNetClassifier, name) for name in IMAGENET_BACKBONES}}


def model_config(kind: str, name: str, data_shape: dict, params: dict) -> dict:
    """Constructor arguments of model `name`: the data's shape (from preprocess's meta.json) plus those of the
    task's model params that this model's constructor takes (only CNN2 and SmallCNN take `dropout`, say)."""
    accepted = inspect.signature(_constructors(kind)[name]).parameters
    return {k: v for k, v in (data_shape | params).items() if k in accepted}


def build_model(kind: str, name: str, config: dict) -> nn.Module:
    """The model `name` of a task of `kind`; `config` holds every constructor argument (saved in checkpoints)."""
    constructors = _constructors(kind)
    if name not in constructors:
        raise ValueError(f"unknown model {name!r} for a {kind} task")
    return constructors[name](**config)
