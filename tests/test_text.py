"""Next-word preprocessing, n-gram baselines, metrics and generation on tiny inputs."""
import numpy as np
import pytest
import torch

from stages import generate
from stages.core.models import build_model
from stages.infra.config import TextBaseline, TextPreprocess
from stages.infra.errors import PipelineError
from stages.kinds.text import baselines as text_baselines
from stages.kinds.text import data as text
from stages.kinds.text import metrics as text_metrics
from stages.kinds.text import predict as text_predict
from stages.kinds.text import prepare as text_prepare


def lines_of(doc: str, n: int) -> list[str]:
    return [f"{doc}{i} w" for i in range(n)]


def test_read_documents_keeps_nonempty_stripped_lines(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("\ufeff대한민국은  민주공화국이다. \n\n   \n 국민은\n".encode("utf-8"))
    assert text_prepare.read_documents([path]) == [["대한민국은  민주공화국이다.", "국민은"]]


def test_read_documents_names_a_file_that_is_not_utf8(tmp_path):
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text("한 줄\n", encoding="utf-8")
    bad.write_bytes("국민은".encode("euc-kr"))
    with pytest.raises(PipelineError, match=r"bad\.txt: not valid UTF-8"):
        text_prepare.read_documents([good, bad])


def test_read_documents_rejects_an_empty_file_and_no_files(tmp_path):
    (tmp_path / "empty.txt").write_text(" \n\n")
    with pytest.raises(PipelineError, match=r"empty\.txt: holds no words"):
        text_prepare.read_documents([tmp_path / "empty.txt"])
    with pytest.raises(PipelineError, match="no text files"):
        text_prepare.read_documents([])


def test_splits_are_contiguous_disjoint_blocks_of_each_document():
    splits = text_prepare.split_blocks([lines_of("a", 10), lines_of("b", 5)], val_ratio=0.2, test_ratio=0.1)
    # a: 7 train, 2 val, 1 test; b (5 lines, half up): 3 train, 1 val, 1 test
    assert [w for w, _ in splits["train"]] == [f"a{i}" for i in range(7)] + ["b0", "b1", "b2"]
    assert [w for w, _ in splits["val"]] == ["a7", "a8", "b3"]
    assert [w for w, _ in splits["test"]] == ["a9", "b4"]
    assert splits["train"][0] == ["a0", "w"]  # lines come back tokenised


def test_split_that_would_leave_a_heldout_part_empty_names_the_param():
    with pytest.raises(PipelineError, match=r"preprocess\.val_ratio=0\.1"):
        text_prepare.split_blocks([lines_of("a", 3), lines_of("b", 4)], val_ratio=0.1, test_ratio=0.3)
    one_line_documents = text_prepare.split_blocks([lines_of("a", 1), lines_of("b", 9)], val_ratio=0.3, test_ratio=0.3)
    assert [w for w, _ in one_line_documents["train"]][:2] == ["a0", "b0"]  # a 1-line document is all training


def test_vocab_has_pad_and_unk_first_and_respects_min_count_and_max_size():
    lines = [["a", "b", "a", "c"], ["b", "a", "d"]]
    assert text_prepare.build_vocab(lines, min_count=1, max_size=0) == ["<pad>", "<unk>", "a", "b", "c", "d"]
    assert text_prepare.build_vocab(lines, min_count=2, max_size=0) == ["<pad>", "<unk>", "a", "b"]
    assert text_prepare.build_vocab(lines, min_count=1, max_size=3) == ["<pad>", "<unk>", "a"]
    with pytest.raises(PipelineError, match="min_count=4"):
        text_prepare.build_vocab(lines, min_count=4, max_size=0)


def test_encode_and_decode():
    vocab = ["<pad>", "<unk>", "a", "b"]
    assert text.encode([["a", "z", "b"]], vocab) == [[2, 1, 3]]
    assert text_predict.decode([3, 1, 2], vocab) == "b <unk> a"


def test_prefix_sequences_by_hand_never_cross_lines():
    x, y = text_prepare.prefix_sequences([[5, 6, 7, 8], [9], [10, 11]], max_len=2)
    assert x.tolist() == [[0, 5], [5, 6], [6, 7], [0, 10]]
    assert y.tolist() == [6, 7, 8, 11]  # 9 and 10 start lines: no target there
    assert x.dtype == y.dtype == np.int64
    empty_x, empty_y = text_prepare.prefix_sequences([[3]], max_len=4)
    assert empty_x.shape == (0, 4) and empty_y.shape == (0,)


def test_window_sequences_run_over_the_token_stream():
    x, y = text_prepare.window_sequences([[1, 2, 3], [4, 5]], seq_length=2)
    assert x.tolist() == [[1, 2], [2, 3], [3, 4]] and y.tolist() == [3, 4, 5]
    short_x, short_y = text_prepare.window_sequences([[1, 2]], seq_length=3)
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
    assert text_metrics.top_ids(probs, 5).tolist() == [[1, 2, 3, 4, 5], [63, 0, 1, 2, 3]]


def test_language_metrics_by_hand():
    top5 = np.array([[1, 2, 3, 4, 5], [3, 4, 5, 6, 7]])
    metrics = text_metrics.language_metrics(np.log([0.5, 0.25]), top5, np.array([2, 3]))
    assert metrics["cross_entropy"] == pytest.approx(1.5 * np.log(2))
    assert metrics["perplexity"] == pytest.approx(2**1.5)
    assert metrics["top1_accuracy"] == 0.5 and metrics["top5_accuracy"] == 1.0
    assert metrics["unk_share"] == 0.0 and metrics["known_top1_accuracy"] == 0.5


def test_predicting_unk_does_not_count_as_knowing_the_word():
    top5 = np.array([[1, 2, 3, 4, 5]] * 4)  # always guesses <unk> first
    metrics = text_metrics.language_metrics(np.log([0.5] * 4), top5, np.array([1, 1, 1, 2]))
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
    arrays, meta = text_prepare.prepare("text", cfg)
    assert meta["sizes"] == {"train": 48, "val": 6, "test": 6} and len(meta["vocab"]) == 6
    metrics, columns = text_baselines.baselines(arrays, meta, TextBaseline(bigram_weights=(0.9,), kn_orders=(2,)))
    assert metrics["bigram"]["top1_accuracy"] == 1.0 > metrics["unigram"]["top1_accuracy"]
    assert metrics["kn"]["top1_accuracy"] == 1.0 and metrics["kn"]["validation"]["order"] == 2
    assert columns["actual"][:3] == ["법", "앞에", "평등하다"]


def test_max_len_that_leaves_a_split_without_sequences_names_the_param(tmp_path, monkeypatch):
    corpus = tmp_path / "data" / "raw" / "text" / "corpus"
    corpus.mkdir(parents=True)
    (corpus / "a.txt").write_text("\n".join(["국민은 법 앞에 평등하다"] * 10) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    cfg = TextPreprocess(min_count=1, max_vocab=0, sequences="window", max_len=30, val_ratio=0.1, test_ratio=0.1)
    with pytest.raises(PipelineError, match="text.preprocess.max_len=30 leaves no val/test sequences"):
        text_prepare.prepare("text", cfg)


# Kneser-Ney by hand. Ids: <pad> 0 (also the line start), <unk> 1, a 2, b 3, c 4. Training lines:
A, B, C = 2, 3, 4
KN_LINES = [[A, B, C, A], [A, B, C, A], [A, B, C], [A, B], [A, C]]
# Bigrams ending at a predicted word (every word but a line's first): ab 4, bc 3, ca 2, ac 1, so n1..n4 = 1, 1, 1, 1,
# Y = n1 / (n1 + 2 n2) = 1/3, Dr = r - (r+1) Y n(r+1)/n(r): D1 = 1 - 2/3 = 1/3, D2 = 2 - 1 = 1, D3+ = 3 - 4/3 = 5/3.
D1, D2, D3 = 1 / 3, 1.0, 5 / 3
# Unigram level, continuation counts N1+(. w) over those bigram types: a {c} 1, b {a} 1, c {b, a} 2. n3 = 0, so
# the formula has no D2 or D3+: the level falls back to KenLM's 0.5, 1, 1.5. Total 4, gamma = (0.5 + 0.5 + 1) / 4,
# spread over the uniform 1/4 of the 4 ids that are not <pad>.
P1 = {1: 0.5 * 0.25, A: 0.5 / 4 + 0.5 * 0.25, B: 0.5 / 4 + 0.5 * 0.25, C: 1 / 4 + 0.5 * 0.25}


def kn_by_hand(order: int, contexts: list[list[int]]) -> np.ndarray:
    tokens = np.array([i for line in KN_LINES for i in line])
    model = text.kneser_ney(tokens, np.array([len(line) for line in KN_LINES]), 5, order)
    return text.kn_probabilities(model, np.array(contexts))


def test_kneser_ney_bigram_by_hand():
    probs = kn_by_hand(2, [[0, A], [A, B], [C, C], [B, 1]])  # histories a, b, c, <unk> (never seen: the unigram)
    gamma_a = (D3 + D1) / 5  # a: b 4 times, c once
    assert probs[0, B] == pytest.approx((4 - D3) / 5 + gamma_a * P1[B])
    assert probs[0, C] == pytest.approx((1 - D1) / 5 + gamma_a * P1[C])
    assert probs[0, A] == pytest.approx(gamma_a * P1[A]) and probs[0, 1] == pytest.approx(gamma_a * P1[1])
    assert probs[1, C] == pytest.approx((3 - D3) / 3 + D3 / 3 * P1[C])  # b: c 3 times
    assert probs[2, A] == pytest.approx((2 - D2) / 2 + D2 / 2 * P1[A])  # c: a twice
    assert probs[3].tolist() == pytest.approx([0.0, P1[1], P1[A], P1[B], P1[C]])
    assert probs.sum(axis=1) == pytest.approx(np.ones(4)) and (probs[:, 0] == 0).all()  # <pad> is never a word


def test_kneser_ney_trigram_by_hand():
    # Trigrams, the line start as <pad>: (<pad> a b) 4, (a b c) 3, (b c a) 2, (<pad> a c) 1: the same n1..n4, so
    # the same D1, D2, D3+. Bigram level, continuation counts: ab {<pad>}, bc {a}, ca {b}, ac {<pad>}, each 1, so
    # n2 = 0: fallback 0.5, 1, 1.5. Its histories: a (b 1, c 1), gamma 1/2; b (c 1), gamma 1/2; c (a 1), gamma 1/2.
    def p2(history, word):
        successors = {A: (B, C), B: (C,), C: (A,)}[history]
        n = len(successors)  # each seen once: total n, each discounted by 0.5, so gamma = 0.5 n / n
        return (0.5 / n if word in successors else 0.0) + 0.5 * P1[word]
    probs = kn_by_hand(3, [[0, 0, A], [0, A, B], [B, C, A]])  # histories (<s> a), (a b), (c a): never seen
    gamma = (D3 + D1) / 5
    assert probs[0, B] == pytest.approx((4 - D3) / 5 + gamma * p2(A, B))
    assert probs[0, C] == pytest.approx((1 - D1) / 5 + gamma * p2(A, C))
    assert probs[0, A] == pytest.approx(gamma * p2(A, A))
    assert probs[1, C] == pytest.approx((3 - D3) / 3 + D3 / 3 * p2(B, C))
    assert probs[1, A] == pytest.approx(D3 / 3 * p2(B, A))
    assert probs[2].tolist() == pytest.approx([0.0] + [p2(A, w) for w in (1, A, B, C)])  # backs off to a
    assert p2(A, B) == pytest.approx(0.375) and p2(A, C) == pytest.approx(0.4375)  # the by-hand helper itself
    assert probs.sum(axis=1) == pytest.approx(np.ones(3))


def test_kneser_ney_discounts_from_counts_and_their_fallback():
    assert text.kn_discounts([4, 3, 2, 1]) == pytest.approx((D1, D2, D3))
    assert text.kn_discounts([1, 1, 2]) == text.FALLBACK_DISCOUNTS  # no count of 3: D2 undefined
    # n = 3, 1, 1, 5: D3+ = 3 - 4 Y n4 / n3 < 0, outside [0, 3]: fallback
    assert text.kn_discounts([1, 1, 1, 2, 3, 4, 4, 4, 4, 4]) == text.FALLBACK_DISCOUNTS


def test_kneser_ney_of_higher_order_is_still_a_distribution():
    probs = kn_by_hand(4, [[0, 0, A], [0, A, B], [A, B, C], [C, C, C]])
    assert probs.sum(axis=1) == pytest.approx(np.ones(4)) and (probs[:, 1:] > 0).all()


def test_validation_picks_the_kneser_ney_order():
    tokens = np.array([i for line in KN_LINES for i in line])
    data = {"train_tokens": tokens, "train_line_lengths": np.array([len(line) for line in KN_LINES]),
            "x_val": np.array([[0, A, B], [0, A, C]]), "y_val": np.array([C, A])}  # "a b" -> c: the trigram knows
    model, val_perplexity = text.fit_kneser_ney(data, 5, (2, 3))
    p2, p3 = kn_by_hand(2, data["x_val"].tolist()), kn_by_hand(3, data["x_val"].tolist())
    assert val_perplexity[2] == pytest.approx(np.exp(-np.mean(np.log(p2[[0, 1], [C, A]]))))
    assert val_perplexity[3] == pytest.approx(np.exp(-np.mean(np.log(p3[[0, 1], [C, A]]))))
    assert val_perplexity[3] < val_perplexity[2] and model["order"] == 3


def test_interpolated_score_picks_lambda_on_validation_by_hand():
    net = {"val": np.array([[0.0, 0.9, 0.1], [0.0, 0.9, 0.1]]), "test": np.array([[0.0, 0.2, 0.8]])}
    kn = {"val": np.array([[0.0, 0.1, 0.9], [0.0, 0.1, 0.9]]), "test": np.array([[0.0, 0.6, 0.4]])}
    y = {"val": np.array([1, 2]), "test": np.array([1])}
    # validation cross-entropy: lambda 0 and 1 -> -(log 0.1 + log 0.9)/2 (perplexity 3.33); 0.5 -> log 2 (best)
    metrics = text_predict.interpolated_score(net, kn, y, (0.0, 0.5, 1.0))
    assert metrics["validation"] == {"perplexity": pytest.approx(2.0), "weight": 0.5}
    assert metrics["perplexity"] == pytest.approx(1 / 0.4)  # test: 0.5 * 0.2 + 0.5 * 0.6
    assert metrics["top1_accuracy"] == 0.0  # the mixture prefers id 2 (0.6 against 0.4)


def corpus_lines(test_words: str) -> dict[str, list[str]]:
    """Two documents of 10 lines; the last line of each (test_ratio 0.1) ends in `test_words`."""
    words = ["국민은", "법", "앞에", "평등하다", "대통령은", "국회의", "동의를", "얻어"]
    docs = {}
    for d, name in enumerate(("a", "b")):
        docs[name] = [" ".join(words[(i * 3 + j + d) % len(words)] for j in range(3 + i % 3)) for i in range(9)]
        docs[name].append(f"국민은 법 {test_words}")
    return docs


def test_test_lines_change_no_count_order_weight_or_lambda(tmp_path, monkeypatch):
    cfg = TextPreprocess(min_count=1, max_vocab=0, sequences="prefix", max_len=3, val_ratio=0.1, test_ratio=0.1)
    baseline = TextBaseline(bigram_weights=(0.1, 0.5, 0.9), kn_orders=(2, 3))
    torch.manual_seed(0)
    runs = []
    for test_words in ("앞에 평등하다 얻어", "동의를 동의를 국회의 대통령은"):
        folder = tmp_path / test_words.replace(" ", "_")
        corpus = folder / "data" / "raw" / "text" / "corpus"
        corpus.mkdir(parents=True)
        for name, lines in corpus_lines(test_words).items():
            (corpus / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        monkeypatch.chdir(folder)
        arrays, meta = text_prepare.prepare("text", cfg)
        metrics, _ = text_baselines.baselines(arrays, meta, baseline)
        kn, val_perplexity = text.fit_kneser_ney(arrays, len(meta["vocab"]), baseline.kn_orders)
        if not runs:
            net = build_model("text", "gru", {"vocab_size": len(meta["vocab"]), "embedding_dim": 4, "hidden_size": 4,
                                              "num_layers": 1, "dropout": 0.0}).eval()
        probs = {s: text_predict.probabilities(net, arrays, meta, s, torch.device("cpu")) for s in ("val", "test")}
        kn_probs = {s: text.kn_probabilities(kn, arrays[f"x_{s}"]) for s in ("val", "test")}
        mixed = text_predict.interpolated_score(probs, kn_probs, {s: arrays[f"y_{s}"] for s in ("val", "test")},
                                                (0.0, 0.25, 0.5, 0.75, 1.0))
        runs.append((arrays, meta, metrics, kn, val_perplexity, mixed))
    (a1, m1, b1, kn1, v1, i1), (a2, m2, b2, kn2, v2, i2) = runs
    assert not np.array_equal(a1["y_test"], a2["y_test"])  # the test lines did change...
    assert b1["kn"]["perplexity"] != b2["kn"]["perplexity"] and i1["perplexity"] != i2["perplexity"]
    for key in ("train_tokens", "train_line_lengths", "x_train", "y_train", "x_val", "y_val"):  # ...nothing else
        assert np.array_equal(a1[key], a2[key]), key
    assert m1["vocab"] == m2["vocab"] and v1 == v2
    assert kn1["order"] == kn2["order"] and kn1["discounts"] == kn2["discounts"]
    assert {k: {h: (r[0].tolist(), r[1].tolist(), r[2]) for h, r in rows.items()} for k, rows in kn1["rows"].items()} \
        == {k: {h: (r[0].tolist(), r[1].tolist(), r[2]) for h, r in rows.items()} for k, rows in kn2["rows"].items()}
    for name in ("bigram", "kn"):
        assert b1[name]["validation"] == b2[name]["validation"]
    assert i1["validation"] == i2["validation"]


def test_generate_samples_from_the_mixture_of_network_and_kneser_ney():
    tokens = np.array([i for line in KN_LINES for i in line])
    kn = text.kneser_ney(tokens, np.array([len(line) for line in KN_LINES]), 5, 2)
    net = build_model("text", "gru", {"vocab_size": 5, "embedding_dim": 4, "hidden_size": 4, "num_layers": 1,
                                      "dropout": 0.0}).eval()
    x = torch.tensor([[0, A, B]])
    with torch.no_grad():
        p_net, p_kn = torch.softmax(net(x).double(), dim=1), kn_by_hand(2, [[0, A, B]])[0]
        assert torch.exp(generate.mixture(net, kn, 1.0)(x))[0].tolist() == pytest.approx(p_net[0].tolist())
        assert torch.exp(generate.mixture(net, kn, 0.0)(x))[0].tolist() == pytest.approx(p_kn.tolist())
        mixed = torch.exp(generate.mixture(net, kn, 0.3)(x))[0]
    assert mixed.tolist() == pytest.approx((0.3 * p_net[0] + 0.7 * torch.from_numpy(p_kn)).tolist())


def test_the_summary_lists_the_mixtures_and_chooses_the_best_validated_of_networks_and_mixtures():
    from stages import plot
    from stages.core import figures

    def row(test, val):
        return {"perplexity": test, "validation": {"perplexity": val}}
    results = figures.Results(task="text", metrics={"rnn": row(40.0, 29.0), "gru": row(38.0, 27.0)},
                              baselines={"bigram": {"perplexity": 28.0}, "kn": {"perplexity": 26.0}}, histories={},
                              predictions={}, baseline_predictions={},
                              interpolated={"rnn+kn": row(25.5, 18.9), "gru+kn": row(25.2, 18.6)})
    summary = plot.summary(results, "perplexity", lower_is_better=True)["text"]
    assert summary["perplexity"] == {"rnn": 40.0, "gru": 38.0, "rnn+kn": 25.5, "gru+kn": 25.2, "baseline_kn": 26.0}
    assert summary["val_perplexity"]["gru+kn"] == 18.6
    assert summary["chosen"] == {"model": "gru+kn", "val_perplexity": 18.6}  # served as the gru run's model_kn
    worse = results.interpolated | {"gru+kn": row(25.2, 28.0), "rnn+kn": row(25.5, 27.5)}
    results = figures.Results(**(results.__dict__ | {"interpolated": worse}))
    assert plot.summary(results, "perplexity", lower_is_better=True)["text"]["chosen"]["model"] == "gru"
