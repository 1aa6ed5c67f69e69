"""How language models are scored (baseline, evaluate): an edit here re-scores, and retrains nothing."""

import numpy as np

from stages.infra.errors import PipelineError
from stages.kinds.text.data import UNK


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
        raise PipelineError("no examples to score: no held-out line has 2+ words (preprocess.test_ratio)")
    cross_entropy = float(-np.mean(logp))
    hit = top5[:, 0] == y
    known = y != UNK
    return {"cross_entropy": cross_entropy, "perplexity": float(np.exp(cross_entropy)),
            "top1_accuracy": float(np.mean(hit)),
            "top5_accuracy": float(np.mean(np.any(top5 == y[:, None], axis=1))),
            "known_top1_accuracy": float(np.mean(hit[known])) if known.any() else 0.0,
            "unk_share": float(np.mean(~known))}
