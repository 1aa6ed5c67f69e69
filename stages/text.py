"""The next-word kind's data (text): what preprocess runs (`prepare`), `tensors` for train and evaluate, and the
functions every stage of the kind shares (read, split, vocabulary, sequences, metrics). The kind's other stages
have their own modules: text_baselines, text_train, text_predict (evaluate, generate and the served model),
text_figures (plot)."""
from collections import Counter
from pathlib import Path

import numpy as np

from stages import paths
from stages.errors import PipelineError

PAD, UNK = 0, 1


def prepare(task: str, cfg) -> tuple[dict, dict]:
    """Contiguous held-out blocks of each document, a vocabulary from the training part only, and (context, next
    word) pairs; the training words as one stream with line lengths, for the n-gram baselines."""
    documents = read_documents(sorted(paths.raw_file(task).glob("*")))
    splits = split_blocks(documents, cfg.val_ratio, cfg.test_ratio)
    vocab = build_vocab(splits["train"], cfg.min_count, cfg.max_vocab)  # training words only
    arrays = {}
    for split, lines in splits.items():
        encoded = encode(lines, vocab)
        make = prefix_sequences if cfg.sequences == "prefix" else window_sequences
        arrays[f"x_{split}"], arrays[f"y_{split}"] = make(encoded, cfg.max_len)
        if split == "train":  # the n-gram baselines count words, and pairs within lines
            arrays["train_tokens"] = np.array([i for line in encoded for i in line], dtype=np.int64)
            arrays["train_line_lengths"] = np.array([len(line) for line in encoded], dtype=np.int64)
    empty = [split for split in splits if len(arrays[f"y_{split}"]) == 0]
    if empty:
        raise PipelineError(f"params.yaml: {task}.preprocess.max_len={cfg.max_len} leaves no {'/'.join(empty)} "
                            f"sequences ({cfg.sequences} mode): lower max_len or raise val_ratio/test_ratio")
    meta = {"vocab": vocab, "max_len": cfg.max_len, "documents": len(documents), "shape": {"vocab_size": len(vocab)},
            "sizes": {s: int(len(arrays[f"y_{s}"])) for s in ("train", "val", "test")}}
    return arrays, meta


def tensors(data: dict, meta: dict, split: str):
    """One split as int64 contexts (N, max_len), pre-padded with 0, and next-word ids (N,)."""
    import torch

    return torch.from_numpy(data[f"x_{split}"]), torch.from_numpy(data[f"y_{split}"])


def read_documents(paths) -> list[list[str]]:
    """Each UTF-8 text file is one document: its non-empty lines, stripped."""
    paths = list(paths)
    if not paths:
        raise PipelineError("no text files to read: the text corpus folder is empty (run: dvc repro download@text)")
    documents = []
    for path in paths:
        try:
            content = Path(path).read_bytes().decode("utf-8-sig")  # -sig: a BOM would glue onto the first word
        except UnicodeDecodeError as err:
            raise PipelineError(f"{path}: not valid UTF-8 text (bad byte at offset {err.start})") from None
        except OSError as err:
            raise PipelineError(f"{path}: unreadable ({err.strerror})") from None
        lines = [line.strip() for line in content.splitlines() if line.strip()]
        if not lines:
            raise PipelineError(f"{path}: holds no words")
        documents.append(lines)
    return documents


def tokenize(line: str) -> list[str]:
    """Whitespace words: Korean spacing units (eojeol), as in the original exercise."""
    return line.split()


def split_blocks(documents: list[list[str]], val_ratio: float, test_ratio: float) -> dict[str, list[list[str]]]:
    """Tokenised lines per split: of each document, the first lines train, the next val, the last test.

    Contiguous blocks, never random lines: neighbouring lines of a document share phrases, so a random split
    would put near-copies of test lines, and their overlapping prefixes, into training.
    """
    splits = {"train": [], "val": [], "test": []}
    for lines in documents:
        n = len(lines)
        # Half up, not Python's round-half-even: a 5-line document at 10% gives each held-out split one line.
        n_test = min(int(np.floor(n * test_ratio + 0.5)), n - 1)  # the training block keeps at least one line
        n_val = min(int(np.floor(n * val_ratio + 0.5)), n - 1 - n_test)
        train_end, val_end = n - n_test - n_val, n - n_test
        splits["train"] += [tokenize(line) for line in lines[:train_end]]
        splits["val"] += [tokenize(line) for line in lines[train_end:val_end]]
        splits["test"] += [tokenize(line) for line in lines[val_end:]]
    for split, param, ratio in (("val", "val_ratio", val_ratio), ("test", "test_ratio", test_ratio)):
        if not splits[split]:
            raise PipelineError(f"text.preprocess.{param}={ratio} leaves the {split} split empty: the documents "
                                f"are too short (longest: {max(map(len, documents))} lines)")
    return splits


def build_vocab(lines: list[list[str]], min_count: int, max_size: int) -> list[str]:
    """<pad>, <unk>, then words seen >= min_count times, most frequent first (ties by word), max_size in all.

    max_size 0 means no cap. The order is deterministic so that reruns give the same ids.
    """
    counts = Counter(word for line in lines for word in line)
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    vocab = (["<pad>", "<unk>"] + words)[:max(max_size, 2) if max_size > 0 else None]
    if len(vocab) == 2:
        raise PipelineError(f"text.preprocess.min_count={min_count} or max_vocab={max_size} leaves no word in "
                            f"the vocabulary ({len(counts)} distinct training words)")
    return vocab


def encode(lines: list[list[str]], vocab: list[str]) -> list[list[int]]:
    index = {word: i for i, word in enumerate(vocab)}
    return [[index.get(word, UNK) for word in line] for line in lines]


def left_padded(ids: list[int], max_len: int) -> list[int]:
    """A model's context: the last max_len ids, pre-padded with PAD so the RNN's last step is a real word. Training
    inputs, generation and the served model all build it here."""
    context = list(ids[-max_len:])
    return [PAD] * (max_len - len(context)) + context


def prefix_sequences(encoded: list[list[int]], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Every prefix of every line predicts the line's next word (the original exercise), within lines only;
    contexts as left_padded builds them."""
    x, y = [], []
    for line in encoded:
        for end in range(1, len(line)):
            x.append(left_padded(line[:end], max_len))
            y.append(line[end])
    return np.array(x, dtype=np.int64).reshape(-1, max_len), np.array(y, dtype=np.int64)


def window_sequences(encoded: list[list[int]], seq_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Every seq_length ids of the split's concatenated token stream predict the next id."""
    stream = np.array([i for line in encoded for i in line], dtype=np.int64)
    n = max(len(stream) - seq_length, 0)
    x = stream[np.arange(n)[:, None] + np.arange(seq_length)[None, :]]
    return x.reshape(n, seq_length), stream[seq_length:seq_length + n]


def top_ids(probs: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k largest entries of each row, most probable first; ties go to the lower id.

    A stable sort, not argpartition: which of several tied entries argpartition keeps depends on the CPU's
    SIMD sort (AVX-512 machines chose differently), so the unigram's top-5 accuracy changed between machines.
    """
    return np.argsort(-probs, axis=1, kind="stable")[:, :k]


def language_metrics(logp: np.ndarray, top5: np.ndarray, y: np.ndarray) -> dict:
    """Cross-entropy (nats per word), perplexity, top-1/top-5 next-word accuracy, and the share of <unk> targets.

    With whitespace words on a small corpus many held-out words are <unk>, and predicting <unk> scores as a hit;
    `known_top1_accuracy` counts only targets inside the vocabulary, where that shortcut earns nothing.
    """
    if len(y) == 0:
        raise PipelineError("no examples to score: no held-out line has 2+ words (text.preprocess.test_ratio)")
    cross_entropy = float(-np.mean(logp))
    hit = top5[:, 0] == y
    known = y != UNK
    return {"cross_entropy": cross_entropy, "perplexity": float(np.exp(cross_entropy)),
            "top1_accuracy": float(np.mean(hit)),
            "top5_accuracy": float(np.mean(np.any(top5 == y[:, None], axis=1))),
            "known_top1_accuracy": float(np.mean(hit[known])) if known.any() else 0.0,
            "unk_share": float(np.mean(~known))}


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
