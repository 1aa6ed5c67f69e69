"""Stage interpolate (text): every trained network mixed with the Kneser-Ney baseline, P = lambda P_network +
(1 - lambda) P_KN, the way recurrent language models earned their place on small corpora (Mikolov et al. 2011).

The Kneser-Ney model is the baseline stage's: counted on the training lines, its order chosen on validation
(text.baseline.kn_orders). lambda is chosen for each network and seed on the validation split alone
(text.interpolate.weights); the test split is scored once, with it. Writes metrics/<task>/interpolated.json:
per network `<model>+kn`, the kept seed's test metrics, its `validation` perplexity and lambda, and the spread
over every seed the checkpoint holds (`seeds`).
Usage: python -m stages.interpolate text
"""
import torch

from stages import paths
from stages.config import TextTask, load_params
from stages.errors import PipelineError, run_stage
from stages.files import load_arrays, read_json, write_json
from stages.inference import is_kept_seed, load_model, seed_spread
from stages.text import fit_kneser_ney, kn_probabilities
from stages.text_predict import interpolated_score, probabilities


def main(argv: list[str]) -> None:
    (task,) = argv
    params = load_params()
    task_cfg = params.task(task)
    if not isinstance(task_cfg, TextTask):
        raise PipelineError(f"interpolate mixes language models; {task} is a {task_cfg.kind} task")
    data, meta = load_arrays(paths.prepared_data(task)), read_json(paths.prepared_meta(task))
    kn, _ = fit_kneser_ney(data, len(meta["vocab"]), task_cfg.baseline.kn_orders)
    kn_probs = {split: kn_probabilities(kn, data[f"x_{split}"]) for split in ("val", "test")}
    y = {split: data[f"y_{split}"] for split in ("val", "test")}
    device, results = torch.device("cpu"), {}
    for name in params.trained_models(task):
        model, checkpoint = load_model(paths.checkpoint(task, name), task_cfg.kind)
        per_seed, kept = [], 0
        for i, state in enumerate(checkpoint.get("seed_state_dicts", [checkpoint["state_dict"]])):
            if is_kept_seed(checkpoint, state):
                kept = i
            model.load_state_dict(state)
            net = {split: probabilities(model, data, meta, split, device) for split in ("val", "test")}
            per_seed.append(interpolated_score(net, kn_probs, y, task_cfg.interpolate.weights))
        results[f"{name}+kn"] = per_seed[kept] | ({"seeds": seed_spread(per_seed) | {"kept": checkpoint["seed"],
                                                                                "count": len(per_seed)}}
                                                  if len(per_seed) > 1 else {})
        print(f"{task} {name}+kn (test, KN order {kn['order']}, lambda {per_seed[kept]['validation']['weight']}): "
              + "  ".join(f"{k} {v:.4f}" for k, v in per_seed[kept].items() if isinstance(v, float)))
    write_json(paths.interpolated_metrics(task), results)


if __name__ == "__main__":
    run_stage(main, "python -m stages.interpolate text")
