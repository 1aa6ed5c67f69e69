"""Stage preprocess: raw files -> train/val/test arrays in data/prepared/<task>/ (data.npz + meta.json).

The task's kind does the work (stages/<kind>.py, through stages/kinds.py): chronological splits and training-only scalers for
series, stratified seeded splits for images, contiguous held-out blocks and a training-only vocabulary for text.
Usage: python -m stages.preprocess <task>
"""
from stages import kinds, paths
from stages.config import load_params
from stages.errors import PipelineError, run_stage
from stages.files import content_sha256, save_arrays, write_json

# files.content_sha256 of data/raw/<task> as the download stage writes it from the bundled sources (the pinned
# package versions of requirements.txt): a raw file cut short or edited by hand is refused, not trained on.
BUNDLED_SHA256 = {
    "passengers": "9dc0d446e38f1d354a952a6659016b998222ba1766da5ebe237f970489fed99b",
    "temperature": "03974d9fc9946f5c2d8065e172a629462208ed66e319da217aacc9989212a740",
    "digits": "2cfd1dd7128e9a7b9c0b8efcf158379dd54ddc5897dff02136cb1c103d82030a",
    "transfer": "26b8002b871b03c7e6fe0dcfc2af9fc7de3ab90a4f468f71f4632d9aef4934ba",
    "text": "ce74baae0d38350f8ceb175d0c96a541a99233633b9d8165f0e24b698b2215c3",
}


def main(argv: list[str]) -> None:
    (task,) = argv
    task_cfg = load_params().task(task)
    if task_cfg.download.source == "bundled":
        found = content_sha256(paths.raw(task))
        if found != BUNDLED_SHA256[task]:
            raise PipelineError(f"{paths.raw(task)}: not the bundled {task} data (sha256 {found[:16]}..., expected "
                                f"{BUNDLED_SHA256[task][:16]}...): recreate it with dvc repro -f download@{task}")
    arrays, meta = kinds.code(task_cfg.kind, "data").prepare(task, task_cfg.preprocess)
    save_arrays(paths.prepared_data(task), **arrays)
    write_json(paths.prepared_meta(task), meta)
    print(f"{task}: examples per split {meta['sizes']}")


if __name__ == "__main__":
    run_stage(main, "python -m stages.preprocess <task>")
