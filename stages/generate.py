"""Stage generate: continue each seed phrase with every trained next-word model, greedily and by sampling.

Writes plots/<task>/samples.md (the plot stage puts it in the task's report) and logs it to each model's run.
Usage: python -m stages.generate text
"""
import torch

from stages import paths, text, tracking
from stages.config import TextTask, load_params
from stages.errors import PipelineError, run_stage
from stages.files import atomic_path, read_json
from stages.training import load_trained


def continuations(model, prompt: str, vocab: list[str], cfg, max_len: int, seed: int) -> dict[str, str]:
    """Greedy and temperature-sampled continuations of one prompt; the sample is seeded, so reruns match."""
    ids = text.encode([text.tokenize(prompt)], vocab)[0]
    with torch.no_grad():
        next_logits = lambda x: model(x)  # noqa: E731  (B, T) ids -> (B, V) logits
        greedy = text.generate(next_logits, ids, cfg.n_words, 0.0, torch.Generator().manual_seed(seed), max_len)
        sampled = text.generate(next_logits, ids, cfg.n_words, cfg.temperature, torch.Generator().manual_seed(seed),
                                max_len)
    return {"greedy": text.decode(greedy, vocab), f"sampled (T={cfg.temperature})": text.decode(sampled, vocab)}


def main(argv: list[str]) -> None:
    (task,) = argv
    params = load_params()
    tracking.check_store(task)  # before any work: a store that cannot be used stops the stage in one line
    task_cfg = params.task(task)
    if not isinstance(task_cfg, TextTask):
        raise PipelineError(f"generate continues text; {task} is a {task_cfg.kind} task")
    cfg = task_cfg.generate
    meta = read_json(paths.prepared_meta(task))
    lines = [f"# {task}: generated continuations", "",
             f"{cfg.n_words} words after each prompt, never `<unk>` (a word outside the training vocabulary).", ""]
    for name in params.trained_models(task):
        model, _ = load_trained(task, name, task_cfg.kind, torch.device("cpu"))
        lines += [f"## {name}", "", "| prompt | mode | continuation |", "|---|---|---|"]
        for prompt in cfg.prompts:
            for mode, words in continuations(model, prompt, meta["vocab"], cfg, meta["max_len"], params.seed).items():
                lines.append(f"| {prompt} | {mode} | {words} |")
                print(f"{name:5s} {mode:16s} {prompt} → {words}")
        lines.append("")
    with atomic_path(paths.samples(task)) as tmp:
        tmp.write_text("\n".join(lines))
    for name in params.trained_models(task):
        run_id = tracking.training_run(task, paths.checkpoint(task, name))
        if run_id is not None:
            tracking.add_to_run(run_id, artifacts=[paths.samples(task)], folder="samples")


if __name__ == "__main__":
    run_stage(main, "python -m stages.generate text")
