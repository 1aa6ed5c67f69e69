"""Every model of the pipeline as a plain nn.Module, and build_model(), the one place that picks one by name.

Shapes: B batch, T time steps, F features, H hidden units.
"""
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


def build_model(kind: str, name: str, config: dict) -> nn.Module:
    """The model `name` of a task of `kind`; `config` holds every constructor argument (saved in checkpoints)."""
    if kind == "series" and name in RECURRENT_CELLS:
        return RecurrentRegressor(name, **config)
    raise ValueError(f"unknown model {name!r} for a {kind} task")
