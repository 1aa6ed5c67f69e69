"""The next-word kind's readers, run by preprocess alone: UTF-8 documents -> contiguous held-out blocks, a
training-only vocabulary, (context, next word) pairs."""
from collections import Counter
from pathlib import Path

import numpy as np

from stages.infra import paths
from stages.infra.errors import PipelineError
from stages.kinds.text.data import encode, left_padded, tokenize


def prepare(task: str, cfg) -> tuple[dict, dict]:
    """Contiguous held-out blocks of each document, a vocabulary from the training part only, and (context, next
    word) pairs; the training words as one stream with line lengths, for the n-gram baselines."""
    documents = read_documents(sorted(p for p in paths.raw(task).rglob("*") if p.is_file() and not p.name.startswith(".")))
    try:  # their refusals name the key within the task's section
        splits = split_blocks(documents, cfg.val_ratio, cfg.test_ratio)
        vocab = build_vocab(splits["train"], cfg.min_count, cfg.max_vocab)  # training words only
    except PipelineError as err:
        raise PipelineError(f"params.yaml: {task}.{err}") from None
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


def read_documents(paths) -> list[list[str]]:
    """Each UTF-8 text file is one document: its non-empty lines, stripped."""
    paths = list(paths)
    if not paths:
        raise PipelineError("no text files to read: the task's raw folder is empty (run: dvc repro)")
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
            raise PipelineError(f"preprocess.{param}={ratio} leaves the {split} split empty: the documents "
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
        raise PipelineError(f"preprocess.min_count={min_count} or max_vocab={max_size} leaves no word in "
                            f"the vocabulary ({len(counts)} distinct training words)")
    return vocab


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
