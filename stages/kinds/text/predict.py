"""A trained language model's predictions: the test scores (stage evaluate), its mixture with the Kneser-Ney model
(stage interpolate), continuations (stage generate) and the logged MLflow model's answers (`serve`, run by
stages/infra/serving.py)."""
import numpy as np

from stages.core.inference import classify, predict
from stages.infra.errors import PipelineError
from stages.kinds.text.data import PAD, UNK, encode, kn_probabilities, left_padded, tensors, tokenize
from stages.kinds.text.metrics import language_metrics, top_ids


def score(model, data: dict, meta: dict, device) -> tuple[dict, dict]:
    """Test cross-entropy, perplexity and next-word accuracies, plus the same on the validation split
    (`validation`: what settings and the registered model may be chosen on); the actual and top predicted word of
    every test example."""
    x, y = tensors(data, meta, "test")
    logp, top5 = classify(model, x, y, device)
    vocab = meta["vocab"]
    columns = {"actual": [vocab[i] for i in y.tolist()], "predicted": [vocab[i] for i in top5[:, 0].tolist()],
               "logp": logp.tolist()}  # log P(actual): what the report's paired bootstrap compares
    x_val, y_val = tensors(data, meta, "val")
    validation = language_metrics(*classify(model, x_val, y_val, device), y_val.numpy())
    return language_metrics(logp, top5, y.numpy()) | {"validation": validation}, columns


def probabilities(model, data: dict, meta: dict, split: str, device) -> np.ndarray:
    """(N, V) next-word probabilities of the model for every example of a split, in float64."""
    import torch

    x, _ = tensors(data, meta, split)
    return torch.softmax(predict(model, x, 512, device).double(), dim=1).numpy()


def interpolated_score(net: dict, kn: dict, y: dict, weights) -> dict:
    """Test metrics of P = lambda P_network + (1 - lambda) P_KN (Mikolov et al., "Extensions of recurrent neural
    network language model", ICASSP 2011), lambda the one of `weights` with the lowest validation cross-entropy;
    `validation` holds that perplexity and lambda. net, kn, y: the validation and test probabilities (N, V) and
    targets, under "val" and "test"."""
    val_ce = {w: float(-np.mean(mixture_logp(net["val"], kn["val"], y["val"], w))) for w in weights}
    weight = min(weights, key=lambda w: (val_ce[w], w))
    probs = weight * net["test"] + (1 - weight) * kn["test"]
    metrics = language_metrics(mixture_logp(net["test"], kn["test"], y["test"], weight),
                               top_ids(probs, min(5, probs.shape[1] - 1)), y["test"])
    return metrics | {"validation": {"perplexity": float(np.exp(val_ce[weight])), "weight": float(weight)}}


def mixture_logp(net: np.ndarray, kn: np.ndarray, y: np.ndarray, weight: float) -> np.ndarray:
    """log P(y) of each example under weight P_network + (1 - weight) P_KN; net, kn: (N, V) probabilities."""
    rows = np.arange(len(y))
    return np.log(weight * net[rows, y] + (1 - weight) * kn[rows, y])


def mixture(model, kn: dict, weight: float):
    """(1, T) ids -> (1, V) log of weight P_model + (1 - weight) P_KN: what generate and the logged mixture sample
    from."""
    import torch

    def next_logits(x):
        net = torch.softmax(model(x).double(), dim=1)
        return torch.log(weight * net + (1 - weight) * torch.from_numpy(kn_probabilities(kn, x.numpy())))
    return next_logits


def serve(model, texts, spec: dict):
    """For each text (column `text`, or the first column): the likeliest next word outside <unk>, its
    probability, and a greedy continuation of n_words words. With `kn` and `kn_weight` in spec (the model the
    interpolate stage logs), the network's mixture with the Kneser-Ney model answers."""
    import pandas as pd
    import torch

    column = texts["text"] if "text" in texts else texts.iloc[:, 0]
    vocab, rows = spec["vocab"], []
    next_logits = mixture(model, spec["kn"], spec["kn_weight"]) if "kn" in spec else model
    for line in column:
        ids, probabilities = encode([tokenize(str(line))], vocab)[0], []
        with torch.no_grad():
            words = generate(next_logits, ids, spec["n_words"], 0.0, None, spec["max_len"], probabilities)
        rows.append({"next_word": vocab[words[0]], "probability": probabilities[0], "continuation": decode(words, vocab)})
    return pd.DataFrame(rows, columns=["next_word", "probability", "continuation"])


def generate(next_logits, prompt_ids: list[int], n_words: int, temperature: float, generator,
             max_len: int, probabilities: list | None = None) -> list[int]:
    """n_words ids continuing prompt_ids (not the prompt itself): argmax if temperature is 0, else sampled.

    Never <pad> or <unk>: on a small corpus <unk> is the likeliest next word, and greedy text would be all <unk>.
    `probabilities`, if a list, gets each chosen word's probability under the model (all words, temperature 1).

    next_logits maps a (1, max_len) int64 tensor, left_padded like the training inputs, to (1, V) logits.
    """
    import torch

    if temperature < 0:
        raise PipelineError(f"generate.temperature={temperature} must be >= 0")
    ids, generated = list(prompt_ids), []
    for _ in range(n_words):
        x = torch.tensor([left_padded(ids, max_len)], dtype=torch.int64)
        logits = next_logits(x)[0].detach().float().cpu().clone()
        raw = logits.clone()
        logits[[PAD, UNK]] = -float("inf")  # padding is not a word; "<unk> <unk>" would tell a reader nothing
        if temperature == 0:
            next_id = int(torch.argmax(logits))
        else:
            probs = torch.softmax(logits / temperature, dim=0)
            next_id = int(torch.multinomial(probs, 1, generator=generator))
        ids.append(next_id)
        generated.append(next_id)
        if probabilities is not None:
            probabilities.append(float(torch.softmax(raw, 0)[next_id]))
    return generated


def decode(ids: list[int], vocab: list[str]) -> str:
    return " ".join(vocab[i] for i in ids)
