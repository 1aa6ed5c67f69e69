"""The next-word kind's figures (stage plot): test perplexity of the networks and of their mixtures with the
Kneser-Ney model beside the n-gram baselines."""
import numpy as np

from stages.core import figures as draw
from stages.core.significance import paired_bootstrap_perplexity, verdict

HEADLINE, LOWER_IS_BETTER = "perplexity", True  # the test metric metrics/summary/<task>.json lists per model


def figures(results: draw.Results, data: dict, meta: dict, task_cfg, seed: int) -> dict:
    """Test perplexity of models, mixtures and baselines."""
    values = {**{b: v["perplexity"] for b, v in results.baselines.items()},
              **{m: v["perplexity"] for m, v in (results.metrics | results.interpolated).items()}}
    return {"perplexity.png": draw.bar_chart(values, set(results.baselines), "test perplexity (lower is better)",
                                             f"{results.task}: models and baselines")}


BLOCK = 25  # consecutive test words per bootstrap block: next-word errors depend on each other within a sentence


def versus(results: draw.Results, best: str) -> dict[str, str]:
    """Each network's and each mixture's paired bootstrap of test perplexity against baseline `best`, resampling
    blocks of BLOCK consecutive test words (a moving-block bootstrap: Kuensch 1989, Ann. Statist. 17(3)), in words."""
    reference = -np.array([float(x) for x in results.baseline_predictions[f"logp_{best}"]])
    logps = {m: c["logp"] for m, c in results.predictions.items()} | results.mixture_predictions
    blocks = np.arange(len(reference)) // BLOCK
    counts = np.bincount(blocks)
    out = {}
    for m, logp in logps.items():
        nll = -np.array([float(x) for x in logp])
        gap, p = paired_bootstrap_perplexity(np.bincount(blocks, nll), np.bincount(blocks, reference), counts)
        out[m] = verdict(p, gap < 0, len(counts), f"blocks of {BLOCK} words")
    return out


def test_table(results: draw.Results) -> dict[str, list]:
    """`dvc plots show`'s test picture (.dvc/plots/text_test.json): the test perplexity of every baseline, network
    and mixture with Kneser-Ney: model, x (the same name), y (perplexity)."""
    rows = {f"{b} (baseline)": v for b, v in results.baselines.items()} | results.metrics | results.interpolated
    return {"model": list(rows), "x": list(rows), "y": [v[HEADLINE] for v in rows.values()]}
