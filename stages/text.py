"""The next-word kind (text): prepare, baselines, tensors, score and figures, the functions every kind module has,
plus the pure functions they use (read, split, vocabulary, sequences, n-gram baselines, metrics, generation)."""
from collections import Counter
from pathlib import Path

import numpy as np

from stages import figures as draw
from stages import paths
from stages.errors import PipelineError

HEADLINE, LOWER_IS_BETTER = "perplexity", True  # the test metric metrics/summary/<task>.json lists per model

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


def baselines(data: dict, meta: dict, cfg) -> tuple[dict, dict]:
    """Unigram and interpolated bigram models of the training words; (metrics, each one's top next word)."""
    scores = ngram_baselines(data["train_tokens"], data["train_line_lengths"], data["x_test"], data["y_test"],
                             len(meta["vocab"]), cfg.bigram_weight)
    metrics = {name: language_metrics(s["logp"], s["top5"], data["y_test"]) for name, s in scores.items()}
    vocab = meta["vocab"]
    columns = {"actual": [vocab[i] for i in data["y_test"]]}
    return metrics, columns | {name: [vocab[i] for i in s["top5"][:, 0]] for name, s in scores.items()}


def augmenter(task_cfg, meta: dict):
    """Text is never augmented."""
    return None


def tensors(data: dict, meta: dict, split: str):
    """One split as int64 contexts (N, max_len), pre-padded with 0, and next-word ids (N,)."""
    import torch

    return torch.from_numpy(data[f"x_{split}"]), torch.from_numpy(data[f"y_{split}"])


def score(model, data: dict, meta: dict, device) -> tuple[dict, dict]:
    """Test cross-entropy, perplexity and next-word accuracies; the actual and top predicted word of every example."""
    from stages.training import classify

    x, y = tensors(data, meta, "test")
    logp, top5 = classify(model, x, y, device)
    vocab = meta["vocab"]
    columns = {"actual": [vocab[i] for i in y.tolist()], "predicted": [vocab[i] for i in top5[:, 0].tolist()]}
    return language_metrics(logp, top5, y.numpy()), columns


def serving(data: dict, meta: dict, task_cfg):
    """What the logged model needs to continue raw text (`spec`), and an input example: two of the prompts."""
    import pandas as pd

    spec = {"vocab": meta["vocab"], "max_len": meta["max_len"], "n_words": task_cfg.generate.n_words}
    return spec, pd.DataFrame({"text": list(task_cfg.generate.prompts[:2])})


def serve(model, texts, spec: dict):
    """For each text (column `text`, or the first column): the likeliest next word outside <unk>, its
    probability, and a greedy continuation of n_words words."""
    import pandas as pd
    import torch

    column = texts["text"] if "text" in texts else texts.iloc[:, 0]
    vocab, rows = spec["vocab"], []
    for line in column:
        ids = encode([tokenize(str(line))], vocab)[0]
        with torch.no_grad():
            words = generate(model, ids, spec["n_words"], 0.0, None, spec["max_len"])
            context = ids[-spec["max_len"]:]
            logits = model(torch.tensor([[PAD] * (spec["max_len"] - len(context)) + context]))[0]
        rows.append({"next_word": vocab[words[0]], "probability": float(torch.softmax(logits, 0)[words[0]]),
                     "continuation": decode(words, vocab)})
    return pd.DataFrame(rows, columns=["next_word", "probability", "continuation"])


def figures(results: draw.Results, data: dict, meta: dict, task_cfg, seed: int) -> dict:
    """Test perplexity of models and baselines."""
    values = {**{b: v["perplexity"] for b, v in results.baselines.items()},
              **{m: v["perplexity"] for m, v in results.metrics.items()}}
    return {"perplexity.png": draw.bar_chart(values, set(results.baselines), "test perplexity (lower is better)",
                                             f"{results.task}: models and baselines")}


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


def prefix_sequences(encoded: list[list[int]], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Every prefix of every line predicts the line's next word (the original exercise), within lines only.

    Context = the last max_len words of the prefix, pre-padded with 0 so the RNN's last step is a real word.
    """
    x, y = [], []
    for line in encoded:
        for end in range(1, len(line)):
            context = line[max(0, end - max_len):end]
            x.append([PAD] * (max_len - len(context)) + context)
            y.append(line[end])
    return np.array(x, dtype=np.int64).reshape(-1, max_len), np.array(y, dtype=np.int64)


def window_sequences(encoded: list[list[int]], seq_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Every seq_length ids of the split's concatenated token stream predict the next id."""
    stream = np.array([i for line in encoded for i in line], dtype=np.int64)
    n = max(len(stream) - seq_length, 0)
    x = stream[np.arange(n)[:, None] + np.arange(seq_length)[None, :]]
    return x.reshape(n, seq_length), stream[seq_length:seq_length + n]


def _top_ids(probs: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k largest entries of each row, most probable first; ties go to the lower id.

    A stable sort, not argpartition: which of several tied entries argpartition keeps depends on the CPU's
    SIMD sort (AVX-512 machines chose differently), so the unigram's top-5 accuracy changed between machines.
    """
    return np.argsort(-probs, axis=1, kind="stable")[:, :k]


def ngram_baselines(tokens: np.ndarray, line_lengths: np.ndarray, x: np.ndarray, y: np.ndarray, vocab_size: int,
                    bigram_weight: float, chunk: int = 256) -> dict:
    """log P(y) and top-5 ids of an add-one unigram and a Jelinek-Mercer bigram, both counted on the training
    words `tokens` (lines of `line_lengths` words each, back to back).

    The bigram conditions on x[:, -1]; pairs are counted within lines only, like the sequences. Only the rows
    of the previous words that occur in x are built, `chunk` at a time: a dense V x V table would not fit.
    """
    k = min(5, vocab_size - 1)  # <pad> is never a candidate
    unigram = np.bincount(tokens, minlength=vocab_size).astype(np.float64) + 1.0
    unigram[PAD] = 0.0
    unigram /= unigram.sum()
    uni_top = _top_ids(unigram[None, :], k)[0]
    scores = {"unigram": {"logp": np.log(unigram[y]), "top5": np.tile(uni_top, (len(y), 1))}}

    within_line = np.ones(max(len(tokens) - 1, 0), dtype=bool)  # pair (tokens[i], tokens[i + 1])...
    within_line[np.cumsum(line_lengths)[:-1] - 1] = False  # ...unless tokens[i] ends a line
    pairs = np.stack([tokens[:-1][within_line], tokens[1:][within_line]], axis=1)
    codes, pair_counts = np.unique(pairs[:, 0] * vocab_size + pairs[:, 1], return_counts=True)
    first, second = codes // vocab_size, codes % vocab_size
    prev_totals = np.bincount(first, weights=pair_counts, minlength=vocab_size)

    prev = x[:, -1]
    logp, top5 = scores["unigram"]["logp"].copy(), scores["unigram"]["top5"].copy()
    seen = np.unique(prev[(prev != PAD) & (prev_totals[prev] > 0)])  # other contexts fall back to the unigram
    for start in range(0, len(seen), chunk):
        rows = seen[start:start + chunk]
        probs = np.tile((1 - bigram_weight) * unigram, (len(rows), 1))
        mask = np.isin(first, rows)
        row_of = np.searchsorted(rows, first[mask])
        np.add.at(probs, (row_of, second[mask]), bigram_weight * pair_counts[mask] / prev_totals[first[mask]])
        probs[:, PAD] = -np.inf  # only matters when bigram_weight is 1 and a row has fewer than k successors
        rows_top = _top_ids(probs, k)
        hit = np.isin(prev, rows)
        r = np.searchsorted(rows, prev[hit])
        with np.errstate(divide="ignore"):  # weight 1: an unseen successor has probability 0
            logp[hit] = np.log(probs[r, y[hit]])
        top5[hit] = rows_top[r]
    scores["bigram"] = {"logp": logp, "top5": top5}
    return scores


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


def generate(next_logits, prompt_ids: list[int], n_words: int, temperature: float, generator,
             max_len: int) -> list[int]:
    """n_words ids continuing prompt_ids (not the prompt itself): argmax if temperature is 0, else sampled.

    Never <pad> or <unk>: on a small corpus <unk> is the likeliest next word, and greedy text would be all <unk>.

    next_logits maps a (1, max_len) int64 tensor, pre-padded with 0 like the training inputs, to (1, V) logits.
    """
    import torch

    if temperature < 0:
        raise PipelineError(f"text.generate.temperature={temperature} must be >= 0")
    ids, generated = list(prompt_ids), []
    for _ in range(n_words):
        context = ids[-max_len:]
        x = torch.tensor([[PAD] * (max_len - len(context)) + context], dtype=torch.int64)
        logits = next_logits(x)[0].detach().float().cpu().clone()
        logits[[PAD, UNK]] = -float("inf")  # padding is not a word; "<unk> <unk>" would tell a reader nothing
        if temperature == 0:
            next_id = int(torch.argmax(logits))
        else:
            probs = torch.softmax(logits / temperature, dim=0)
            next_id = int(torch.multinomial(probs, 1, generator=generator))
        ids.append(next_id)
        generated.append(next_id)
    return generated


def decode(ids: list[int], vocab: list[str]) -> str:
    return " ".join(vocab[i] for i in ids)
