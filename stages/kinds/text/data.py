"""The next-word kind's shared data functions: `tensors` for train and evaluate, the tokeniser, the vocabulary
encoding and the Kneser-Ney language model (baseline, interpolate, the served mixture). The reader, splits and
sequences are in prepare.py (preprocess alone), the scores in metrics.py."""
from collections import Counter

import numpy as np

PAD, UNK = 0, 1




def tensors(data: dict, meta: dict, split: str):
    """One split as int64 contexts (N, max_len), pre-padded with 0, and next-word ids (N,)."""
    import torch

    return torch.from_numpy(data[f"x_{split}"]), torch.from_numpy(data[f"y_{split}"])




def tokenize(line: str) -> list[str]:
    """Whitespace words: Korean spacing units (eojeol), as in the original exercise."""
    return line.split()






def encode(lines: list[list[str]], vocab: list[str]) -> list[list[int]]:
    index = {word: i for i, word in enumerate(vocab)}
    return [[index.get(word, UNK) for word in line] for line in lines]


def left_padded(ids: list[int], max_len: int) -> list[int]:
    """A model's context: the last max_len ids, pre-padded with PAD so the RNN's last step is a real word. Training
    inputs, generation and the served model all build it here."""
    context = list(ids[-max_len:])
    return [PAD] * (max_len - len(context)) + context










# Interpolated modified Kneser-Ney (Chen & Goodman, "An empirical study of smoothing techniques for language
# modeling", 1998, section 3.5): the count-based language model the field compares against.
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # KenLM's --discount_fallback, for a level whose counts give no discounts


def ngram_counts(tokens: np.ndarray, line_lengths: np.ndarray, order: int) -> Counter:
    """Counts of the `order`-word n-grams that end at a predicted word (every word of a line but its first), the
    history pre-padded with PAD, which stands for the line start as it does in the networks' contexts."""
    counts, start = Counter(), 0
    for length in line_lengths:
        line = [PAD] * (order - 1) + tokens[start:start + length].tolist()
        start += length
        for end in range(order, len(line)):  # line[order - 1] is the line's first word: never a target
            counts[tuple(line[end - order + 1:end + 1])] += 1
    return counts


def kn_discounts(counts) -> tuple[float, float, float]:
    """D1, D2, D3+ from the count-of-counts n1..n4 of one level (Chen & Goodman 1998, eq. 26): Y = n1/(n1+2 n2),
    Dr = r - (r+1) Y n(r+1)/n(r). Where a count-of-count is 0 or a discount falls outside [0, r] (tiny corpora),
    the level uses FALLBACK_DISCOUNTS, as KenLM does."""
    n = np.bincount(np.minimum(np.fromiter(counts, dtype=np.int64), 5), minlength=6)
    if min(n[1], n[2], n[3]) == 0:
        return FALLBACK_DISCOUNTS
    y = n[1] / (n[1] + 2 * n[2])
    discounts = tuple(float(r - (r + 1) * y * n[r + 1] / n[r]) for r in (1, 2, 3))
    return discounts if all(0 <= d <= r for r, d in zip((1, 2, 3), discounts, strict=True)) else FALLBACK_DISCOUNTS


def kneser_ney(tokens: np.ndarray, line_lengths: np.ndarray, vocab_size: int, order: int) -> dict:
    """An interpolated modified Kneser-Ney model of `order` (>= 2) counted on the training lines.

    P_k(w|h) = max(c_k(hw) - D_k(c_k(hw)), 0) / c_k(h) + gamma_k(h) P_(k-1)(w|h minus its first word), with
    gamma_k(h) = sum over w of D_k(c_k(hw)) / c_k(h); an unseen h uses P_(k-1) alone; below the unigram, the uniform
    distribution over every id but PAD. c_k is the raw count at the highest order and the continuation count
    N1+(. g) (distinct words seen before g) below it, except for n-grams that start with the line start, which
    nothing precedes: they keep their raw counts (as SRILM and KenLM treat <s>). Each level's discounts come from
    its own counts (kn_discounts). Returns plain data (picklable): per level, each history's successor ids, their
    discounted probabilities and gamma.
    """
    counts = {order: ngram_counts(tokens, line_lengths, order)}
    for k in range(order - 1, 0, -1):
        continuation = Counter(gram[1:] for gram in counts[k + 1])
        raw = ngram_counts(tokens, line_lengths, k)
        counts[k] = Counter({g: raw[g] if g[0] == PAD else c for g, c in continuation.items()})
    model = {"order": order, "vocab_size": vocab_size, "discounts": {}, "rows": {}}
    for k, level in counts.items():
        discounts = kn_discounts(level.values())
        by_history = {}
        for gram, c in level.items():
            by_history.setdefault(gram[:-1], []).append((gram[-1], c))
        rows = {}
        for history, successors in by_history.items():
            ids = np.array([w for w, _ in successors], dtype=np.int64)
            c = np.array([n for _, n in successors], dtype=np.float64)
            d = np.array(discounts)[np.minimum(c, 3).astype(int) - 1]
            rows[history] = (ids, (c - d) / c.sum(), float(d.sum() / c.sum()))
        model["discounts"][k], model["rows"][k] = discounts, rows
    return model


def kn_probabilities(model: dict, contexts: np.ndarray) -> np.ndarray:
    """(N, V) next-word probabilities of each context row (N, T >= order-1), pre-padded with PAD like the
    networks' inputs; only its last order-1 ids count."""
    vocab_size, keep = model["vocab_size"], model["order"] - 1
    uniform = np.full(vocab_size, 1.0 / (vocab_size - 1))
    uniform[PAD] = 0.0
    memo = {}

    def distribution(history: tuple) -> np.ndarray:
        if history not in memo:
            lower = distribution(history[1:]) if history else uniform
            row = model["rows"][len(history) + 1].get(history)
            if row is None:  # an unseen history: the lower order alone
                memo[history] = lower
            else:
                ids, probs, gamma = row
                p = gamma * lower
                p[ids] += probs
                memo[history] = p
        return memo[history]

    return np.stack([distribution(tuple(row[len(row) - keep:].tolist())) for row in contexts])


def fit_kneser_ney(data: dict, vocab_size: int, orders) -> tuple[dict, dict]:
    """The Kneser-Ney model counted on the training lines whose order has the lowest validation cross-entropy,
    and every order's validation perplexity. The test split plays no part."""
    models, val_perplexity = {}, {}
    for order in orders:
        models[order] = kneser_ney(data["train_tokens"], data["train_line_lengths"], vocab_size, order)
        probs = kn_probabilities(models[order], data["x_val"])
        val_perplexity[order] = float(np.exp(-np.mean(np.log(probs[np.arange(len(probs)), data["y_val"]]))))
    best = min(orders, key=lambda order: (val_perplexity[order], order))
    return models[best], val_perplexity
