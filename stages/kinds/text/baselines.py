"""The next-word kind's baselines (stage baseline): unigram, Jelinek-Mercer bigram and interpolated modified
Kneser-Ney models counted on the training words, their settings chosen on validation, scored on the same test
examples as the networks."""
import numpy as np

from stages.kinds.text.data import PAD, fit_kneser_ney, kn_probabilities
from stages.kinds.text.metrics import language_metrics, top_ids


def baselines(data: dict, meta: dict, cfg) -> tuple[dict, dict]:
    """Unigram, bigram and Kneser-Ney models of the training words; (metrics, each one's top next word and log
    P(actual word), `logp_<name>`). The
    bigram's weight and the Kneser-Ney order are those with the lowest validation cross-entropy; each model's
    `validation` entry holds its validation perplexity and the chosen setting."""
    counted = data["train_tokens"], data["train_line_lengths"]
    vocab_size = len(meta["vocab"])
    val_ce = {w: -np.mean(ngram_baselines(*counted, data["x_val"], data["y_val"], vocab_size, w)["bigram"]["logp"])
              for w in cfg.bigram_weights}
    weight = min(cfg.bigram_weights, key=lambda w: (val_ce[w], w))
    scores = ngram_baselines(*counted, data["x_test"], data["y_test"], vocab_size, weight)
    kn, val_perplexity = fit_kneser_ney(data, vocab_size, cfg.kn_orders)
    probs = kn_probabilities(kn, data["x_test"])
    scores["kn"] = {"logp": np.log(probs[np.arange(len(probs)), data["y_test"]]),
                    "top5": top_ids(probs, min(5, vocab_size - 1))}
    metrics = {name: language_metrics(s["logp"], s["top5"], data["y_test"]) for name, s in scores.items()}
    metrics["bigram"]["validation"] = {"perplexity": float(np.exp(val_ce[weight])), "bigram_weight": weight}
    metrics["kn"]["validation"] = {"perplexity": val_perplexity[kn["order"]], "order": kn["order"]}
    vocab = meta["vocab"]
    columns = {"actual": [vocab[i] for i in data["y_test"]]}
    columns |= {name: [vocab[i] for i in s["top5"][:, 0]] for name, s in scores.items()}
    return metrics, columns | {f"logp_{name}": s["logp"].tolist() for name, s in scores.items()}  # log P(actual)


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
    uni_top = top_ids(unigram[None, :], k)[0]
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
        rows_top = top_ids(probs, k)
        hit = np.isin(prev, rows)
        r = np.searchsorted(rows, prev[hit])
        with np.errstate(divide="ignore"):  # weight 1: an unseen successor has probability 0
            logp[hit] = np.log(probs[r, y[hit]])
        top5[hit] = rows_top[r]
    scores["bigram"] = {"logp": logp, "top5": top5}
    return scores
