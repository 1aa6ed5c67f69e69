"""Stage preprocess: raw files -> train/val/test arrays in data/prepared/<task>/ (data.npz + meta.json).

The task's kind does the work (stages/kinds/<kind>/prepare.py): chronological splits and training-only scalers for
series, stratified seeded splits for images, contiguous held-out blocks and a training-only vocabulary for text.
Usage: python -m stages.preprocess <task>
"""
from stages import kinds
from stages.infra import paths
from stages.infra.config import load_params
from stages.infra.errors import run_stage
from stages.infra.files import save_arrays, write_json


def main(argv: list[str]) -> None:
    (task,) = argv
    task_cfg = load_params().task(task)
    arrays, meta = kinds.code(task_cfg.kind, "prepare").prepare(task, task_cfg.preprocess)
    save_arrays(paths.prepared_data(task), **arrays)
    write_json(paths.prepared_meta(task), meta)
    print(f"{task}: examples per split {meta['sizes']}")


if __name__ == "__main__":
    run_stage(main, "python -m stages.preprocess <task>")
