"""Next-word preprocessing, n-gram baselines, metrics and generation on tiny inputs."""
import numpy as np
import pytest
import torch

from stages import text, text_baselines, text_predict
from stages.config import TextBaseline, TextPreprocess
from stages.errors import PipelineError


def lines_of(doc: str, n: int) -> list[str]:
    return [f"{doc}{i} w" for i in range(n)]


def test_read_documents_keeps_nonempty_stripped_lines(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("\ufeff대한민국은  민주공화국이다. \n\n   \n 국민은\n".encode("utf-8"))
    assert text.read_documents([path]) == [["대한민국은  민주공화국이다.", "국민은"]]


def test_read_documents_names_a_file_that_is_not_utf8(tmp_path):
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text("한 줄\n", encoding="utf-8")
    bad.write_bytes("국민은".encode("euc-kr"))
    with pytest.raises(PipelineError, match=r"bad\.txt: not valid UTF-8"):
        text.read_documents([good, bad])


def test_read_documents_rejects_an_empty_file_and_no_files(tmp_path):
    (tmp_path / "empty.txt").write_text(" \n\n")
    with pytest.raises(PipelineError, match=r"empty\.txt: holds no words"):
        text.read_documents([tmp_path / "empty.txt"])
    with pytest.raises(PipelineError, match="no text files"):
        text.read_documents([])


def test_splits_are_contiguous_disjoint_blocks_of_each_document():
    splits = text.split_blocks([lines_of("a", 10), lines_of("b", 5)], val_ratio=0.2, test_ratio=0.1)
    # a: 7 train, 2 val, 1 test; b (5 lines, half up): 3 train, 1 val, 1 test
    assert [w for w, _ in splits["train"]] == [f"a{i}" for i in range(7)] + ["b0", "b1", "b2"]
    assert [w for w, _ in splits["val"]] == ["a7", "a8", "b3"]
    assert [w for w, _ in splits["test"]] == ["a9", "b4"]
    assert splits["train"][0] == ["a0", "w"]  # lines come back tokenised


def test_split_that_would_leave_a_heldout_part_empty_names_the_param():
    with pytest.raises(PipelineError, match=r"text\.preprocess\.val_ratio=0\.1"):
        text.split_blocks([lines_of("a", 3), lines_of("b", 4)], val_ratio=0.1, test_ratio=0.3)
    one_line_documents = text.split_blocks([lines_of("a", 1), lines_of("b", 9)], val_ratio=0.3, test_ratio=0.3)
    assert [w for w, _ in one_line_documents["train"]][:2] == ["a0", "b0"]  # a 1-line document is all training


def test_vocab_has_pad_and_unk_first_and_respects_min_count_and_max_size():
    lines = [["a", "b", "a", "c"], ["b", "a", "d"]]
    assert text.build_vocab(lines, min_count=1, max_size=0) == ["<pad>", "<unk>", "a", "b", "c", "d"]
    assert text.build_vocab(lines, min_count=2, max_size=0) == ["<pad>", "<unk>", "a", "b"]
    assert text.build_vocab(lines, min_count=1, max_size=3) == ["<pad>", "<unk>", "a"]
    with pytest.raises(PipelineError, match="min_count=4"):
        text.build_vocab(lines, min_count=4, max_size=0)


def test_encode_and_decode():
    vocab = ["<pad>", "<unk>", "a", "b"]
    assert text.encode([["a", "z", "b"]], vocab) == [[2, 1, 3]]
    assert text_predict.decode([3, 1, 2], vocab) == "b <unk> a"


def test_prefix_sequences_by_hand_never_cross_lines():
    x, y = text.prefix_sequences([[5, 6, 7, 8], [9], [10, 11]], max_len=2)
    assert x.tolist() == [[0, 5], [5, 6], [6, 7], [0, 10]]
    assert y.tolist() == [6, 7, 8, 11]  # 9 and 10 start lines: no target there
    assert x.dtype == y.dtype == np.int64
    empty_x, empty_y = text.prefix_sequences([[3]], max_len=4)
    assert empty_x.shape == (0, 4) and empty_y.shape == (0,)


def test_window_sequences_run_over_the_token_stream():
    x, y = text.window_sequences([[1, 2, 3], [4, 5]], seq_length=2)
    assert x.tolist() == [[1, 2], [2, 3], [3, 4]] and y.tolist() == [3, 4, 5]
    short_x, short_y = text.window_sequences([[1, 2]], seq_length=3)
    assert short_x.shape == (0, 3) and short_y.shape == (0,)


def ngrams(lines: list[list[int]], *args):
    """ngram_baselines on training lines given as lists of ids."""
    tokens = np.array([i for line in lines for i in line], dtype=np.int64)
    return text_baselines.ngram_baselines(tokens, np.array([len(line) for line in lines]), *args)


def test_unigram_is_a_distribution_over_the_words_without_pad():
    vocab_size = 6
    y = np.arange(1, vocab_size)
    scores = ngrams([[2, 3, 3], [4]], np.full((len(y), 1), 2), y, vocab_size, 0.7)
    assert np.exp(scores["unigram"]["logp"]).sum() == pytest.approx(1.0)
    assert scores["unigram"]["top5"][0].tolist() == [3, 2, 4, 1, 5]  # add-one counts 3, 2, 2, 1, 1; never 0


def test_bigram_with_weight_one_predicts_the_seen_successor():
    scores = ngrams([[2, 3, 4], [2, 3, 4]], np.array([[0, 2], [0, 3]]), np.array([3, 4]), 7, 1.0)
    assert scores["bigram"]["top5"][:, 0].tolist() == [3, 4]
    assert scores["bigram"]["logp"] == pytest.approx([0.0, 0.0])
    assert 0 not in scores["bigram"]["top5"]


def test_bigram_interpolates_and_counts_no_pair_across_lines():
    # unigram add-one counts: <unk> 1, 2: 3, 3: 2, 4: 2 -> /8; bigram counts within lines: 2->3 once, 2->4 once
    scores = ngrams([[2, 3], [2, 4]], np.array([[2], [3]]), np.array([3, 2]), 5, 0.5)
    assert np.exp(scores["bigram"]["logp"][0]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 8)
    # 3 ends its line, so "3 2" (across the line break) was never counted: 3 falls back to the unigram
    assert scores["bigram"]["logp"][1] == pytest.approx(np.log(3 / 8))
    assert scores["bigram"]["top5"][1].tolist() == scores["unigram"]["top5"][1].tolist()


def test_top_ids_break_ties_by_the_lower_id_on_every_cpu():
    # 63 tied entries: argpartition (the previous code) kept ids 1-4 and 6 on an AVX-512 machine, skipping 5
    probs = np.array([[0.1] + [0.3] * 63, [0.3] * 63 + [0.4]])
    assert text.top_ids(probs, 5).tolist() == [[1, 2, 3, 4, 5], [63, 0, 1, 2, 3]]


def test_language_metrics_by_hand():
    top5 = np.array([[1, 2, 3, 4, 5], [3, 4, 5, 6, 7]])
    metrics = text.language_metrics(np.log([0.5, 0.25]), top5, np.array([2, 3]))
    assert metrics["cross_entropy"] == pytest.approx(1.5 * np.log(2))
    assert metrics["perplexity"] == pytest.approx(2**1.5)
    assert metrics["top1_accuracy"] == 0.5 and metrics["top5_accuracy"] == 1.0
    assert metrics["unk_share"] == 0.0 and metrics["known_top1_accuracy"] == 0.5


def test_predicting_unk_does_not_count_as_knowing_the_word():
    top5 = np.array([[1, 2, 3, 4, 5]] * 4)  # always guesses <unk> first
    metrics = text.language_metrics(np.log([0.5] * 4), top5, np.array([1, 1, 1, 2]))
    assert metrics["top1_accuracy"] == 0.75 and metrics["unk_share"] == 0.75
    assert metrics["known_top1_accuracy"] == 0.0


def fake_model(vocab_size: int, seen: list):
    """Prefers the id after the last context id, but gives <pad> the highest logit of all."""
    def next_logits(x):
        seen.append(x.tolist())
        logits = torch.zeros(1, vocab_size)
        logits[0, (int(x[0, -1]) + 1) % vocab_size] = 5.0
        logits[0, 0] = 10.0
        return logits
    return next_logits


def test_greedy_generation_follows_the_model_and_never_emits_pad_or_unk():
    seen = []
    ids = text_predict.generate(fake_model(8, seen), [3], n_words=6, temperature=0.0, generator=None, max_len=3)
    assert ids == [4, 5, 6, 7, 2, 3]  # after 7 the preferred id is 0 (<pad>), and 1 is <unk>: both masked
    assert seen[0] == [[0, 0, 3]] and seen[4] == [[5, 6, 7]]  # pre-padded, then the last max_len ids


def test_sampled_generation_is_reproducible_with_the_same_seed():
    def sample(seed):
        return text_predict.generate(fake_model(50, []), [3], n_words=20, temperature=5.0,
                             generator=torch.Generator().manual_seed(seed), max_len=4)
    assert sample(0) == sample(0)
    assert len(sample(0)) == 20 and not {0, 1} & set(sample(0) + sample(1))
    assert sample(0) != [4 + i for i in range(20)]  # at T=5 it does sample, not just follow the argmax


def test_prepare_text_and_baselines_end_to_end(tmp_path, monkeypatch):
    corpus = tmp_path / "data" / "raw" / "text" / "corpus"
    corpus.mkdir(parents=True)
    for name in ("a", "b"):
        (corpus / f"{name}.txt").write_text("\n".join(["국민은 법 앞에 평등하다"] * 10) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    cfg = TextPreprocess(min_count=1, max_vocab=0, sequences="prefix", max_len=3, val_ratio=0.1, test_ratio=0.1)
    arrays, meta = text.prepare("text", cfg)
    assert meta["sizes"] == {"train": 48, "val": 6, "test": 6} and len(meta["vocab"]) == 6
    metrics, columns = text_baselines.baselines(arrays, meta, TextBaseline(bigram_weight=0.9))
    assert metrics["bigram"]["top1_accuracy"] == 1.0 > metrics["unigram"]["top1_accuracy"]
    assert columns["actual"][:3] == ["법", "앞에", "평등하다"]


def test_max_len_that_leaves_a_split_without_sequences_names_the_param(tmp_path, monkeypatch):
    corpus = tmp_path / "data" / "raw" / "text" / "corpus"
    corpus.mkdir(parents=True)
    (corpus / "a.txt").write_text("\n".join(["국민은 법 앞에 평등하다"] * 10) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    cfg = TextPreprocess(min_count=1, max_vocab=0, sequences="window", max_len=30, val_ratio=0.1, test_ratio=0.1)
    with pytest.raises(PipelineError, match="text.preprocess.max_len=30 leaves no val/test sequences"):
        text.prepare("text", cfg)
