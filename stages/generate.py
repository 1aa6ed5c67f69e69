"""Stage generate: continue each seed phrase with every trained next-word model, and with its mixture with the
Kneser-Ney model (the weight the interpolate stage chose on validation), greedily and by sampling.

Writes plots/<task>/samples.md (the plot stage puts it in the task's report; the log stage adds it to each
model's MLflow run).
Usage: python -m stages.generate text
"""
import torch

from stages.core.inference import load_model
from stages.infra import paths
from stages.infra.config import TextTask, load_params
from stages.infra.errors import PipelineError, run_stage
from stages.infra.files import atomic_path, load_arrays, read_json
from stages.kinds.text.data import encode, fit_kneser_ney, tokenize
from stages.kinds.text.predict import decode, generate, mixture


def continuations(next_logits, prompt: str, vocab: list[str], cfg, max_len: int, seed: int) -> dict[str, str]:
    """Greedy and temperature-sampled continuations of one prompt by next_logits ((B, T) ids -> (B, V) logits);
    the sample is seeded, so reruns match."""
    ids = encode([tokenize(prompt)], vocab)[0]
    with torch.no_grad():
        greedy = generate(next_logits, ids, cfg.n_words, 0.0, torch.Generator().manual_seed(seed), max_len)
        sampled = generate(next_logits, ids, cfg.n_words, cfg.temperature, torch.Generator().manual_seed(seed),
                                max_len)
    return {"greedy": decode(greedy, vocab), f"sampled (T={cfg.temperature})": decode(sampled, vocab)}


def main(argv: list[str]) -> None:
    (task,) = argv
    params = load_params()
    task_cfg = params.task(task)
    if not isinstance(task_cfg, TextTask):
        raise PipelineError(f"generate continues text; {task} is a {task_cfg.kind} task")
    cfg = task_cfg.generate
    meta, weights = read_json(paths.prepared_meta(task)), read_json(paths.interpolated_metrics(task))
    kn, _ = fit_kneser_ney(load_arrays(paths.prepared_data(task)), len(meta["vocab"]), task_cfg.baseline.kn_orders)
    lines = [f"# {task}: generated continuations", "",
             f"{cfg.n_words} words after each prompt, never `<unk>` (a word outside the training vocabulary).", ""]
    for name in params.trained_models(task):
        model, _ = load_model(paths.checkpoint(task, name), task_cfg.kind)
        mixed = mixture(model, kn, weights[f"{name}+kn"]["validation"]["weight"])
        for label, next_logits in ((name, model), (f"{name}+kn", mixed)):
            lines += [f"## {label}", "", "| prompt | mode | continuation |", "|---|---|---|"]
            for prompt in cfg.prompts:
                for mode, words in continuations(next_logits, prompt, meta["vocab"], cfg, meta["max_len"],
                                                 params.seed).items():
                    lines.append(f"| {prompt} | {mode} | {words} |")
                    print(f"{label:8s} {mode:16s} {prompt} → {words}")
            lines.append("")
    with atomic_path(paths.samples(task)) as tmp:
        tmp.write_text("\n".join(lines))


if __name__ == "__main__":
    run_stage(main, "python -m stages.generate text")
