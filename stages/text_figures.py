"""The next-word kind's figures (stage plot): test perplexity of the networks and of their mixtures with the
Kneser-Ney model beside the n-gram baselines."""
from stages import figures as draw

HEADLINE, LOWER_IS_BETTER = "perplexity", True  # the test metric metrics/summary/<task>.json lists per model


def figures(results: draw.Results, data: dict, meta: dict, task_cfg, seed: int) -> dict:
    """Test perplexity of models, mixtures and baselines."""
    values = {**{b: v["perplexity"] for b, v in results.baselines.items()},
              **{m: v["perplexity"] for m, v in (results.metrics | results.interpolated).items()}}
    return {"perplexity.png": draw.bar_chart(values, set(results.baselines), "test perplexity (lower is better)",
                                             f"{results.task}: models and baselines")}
