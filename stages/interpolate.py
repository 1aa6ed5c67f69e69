"""Stage interpolate (text): every trained network mixed with the Kneser-Ney baseline, P = lambda P_network +
(1 - lambda) P_KN, the way recurrent language models earned their place on small corpora (Mikolov et al. 2011).

The Kneser-Ney model is the baseline stage's: counted on the training lines, its order chosen on validation
(text.baseline.kn_orders). lambda is chosen for each network and seed on the validation split alone
(text.interpolate.weights); the test split is scored once, with it. Writes metrics/<task>/interpolated.json:
per network `<model>+kn`, the kept seed's test metrics, its `validation` perplexity and lambda, and the spread
over every seed the checkpoint holds (`seeds`), and plots/<task>/mixtures/predictions.csv: each mixture's log
P(actual word) of every test example. Each network's MLflow training run gets the mixture of its kept seed
as a second model, `model_kn` (runs:/<run id>/model_kn: words in, next words out, like `model`); what was mixed goes
to logs/<task>.mixtures.json, which lives in the DVC cache so that a fresh clone runs this stage (see stages/log.py).
Usage: python -m stages.interpolate text
"""
from pathlib import Path

import torch

from stages.core.inference import is_kept_seed, load_model, seed_spread
from stages.infra import paths, store, tracking
from stages.infra.config import TextTask, load_params
from stages.infra.errors import PipelineError, run_stage
from stages.infra.files import content_sha256, load_arrays, read_json, write_csv, write_json
from stages.kinds.text.data import fit_kneser_ney, kn_probabilities
from stages.kinds.text.predict import interpolated_score, mixture_logp, probabilities
from stages.kinds.text.train import serving


def main(argv: list[str]) -> None:
    (task,) = argv
    params = load_params()
    task_cfg = params.task(task)
    if not isinstance(task_cfg, TextTask):
        raise PipelineError(f"interpolate mixes language models; {task} is a {task_cfg.kind} task")
    store.check_store(task)  # before any work: a store that cannot be used stops the stage in one line
    data, meta = load_arrays(paths.prepared_data(task)), read_json(paths.prepared_meta(task))
    kn, _ = fit_kneser_ney(data, len(meta["vocab"]), task_cfg.baseline.kn_orders)
    kn_probs = {split: kn_probabilities(kn, data[f"x_{split}"]) for split in ("val", "test")}
    y = {split: data[f"y_{split}"] for split in ("val", "test")}
    device, results, mixed, logp = torch.device("cpu"), {}, {}, {}
    served_as = serving(data, meta, task_cfg)  # what the logged model needs to continue raw text, and an example
    for name in params.trained_models(task):
        path = paths.checkpoint(task, name)
        model, checkpoint = load_model(path, task_cfg.kind)
        per_seed, kept = [], 0
        for i, state in enumerate(checkpoint.get("seed_state_dicts", [checkpoint["state_dict"]])):
            model.load_state_dict(state)
            net = {split: probabilities(model, data, meta, split, device) for split in ("val", "test")}
            per_seed.append(interpolated_score(net, kn_probs, y, task_cfg.interpolate.weights))
            if is_kept_seed(checkpoint, state):
                kept, kept_net = i, net["test"]
        results[f"{name}+kn"] = per_seed[kept] | ({"seeds": seed_spread(per_seed) | {"kept": checkpoint["seed"],
                                                                                "count": len(per_seed)}}
                                                  if len(per_seed) > 1 else {})
        weight = per_seed[kept]["validation"]["weight"]
        logp[f"{name}+kn"] = mixture_logp(kept_net, kn_probs["test"], y["test"], weight).tolist()
        print(f"{task} {name}+kn (test, KN order {kn['order']}, lambda {weight}): "
              + "  ".join(f"{k} {v:.4f}" for k, v in per_seed[kept].items() if isinstance(v, float)))
        model.load_state_dict(checkpoint["state_dict"])  # the kept seed: the one the logged models serve
        log_mixture(task, path, model, served_as, kn, weight)
        mixed[name] = {"checkpoint_sha256": content_sha256(path), "kn_order": kn["order"], "weight": weight}
    write_json(paths.interpolated_metrics(task), results)
    write_csv(paths.mixture_predictions(task), logp)  # log P(actual word), for the report's paired bootstrap
    write_json(paths.mixtures_logged(task), mixed)


def log_mixture(task: str, checkpoint: Path, model, served_as: tuple, kn: dict, weight: float) -> None:
    """The mixture as the model `model_kn` of the network's training run (none: a checkpoint from `dvc pull`)."""
    from stages.infra.serving import ServedModel  # MLflow's import, only where a run takes a model

    run_id = tracking.training_run(task, checkpoint)
    if run_id is not None:
        spec, example = served_as
        served = ServedModel("text", spec | {"kn": kn, "kn_weight": weight})
        tracking.add_model(run_id, "model_kn", model, served, example, checkpoint)


if __name__ == "__main__":
    run_stage(main, "python -m stages.interpolate text")
