"""What train needs of the next-word kind beyond the shared loop: no augmentation, and the settings the logged
model needs to continue raw text."""


def augmenter(task_cfg, meta: dict):
    """Text is never augmented."""
    return None



def model_inputs(name: str, config: dict, data: dict, meta: dict, task_cfg) -> tuple[dict, dict]:
    """Every next-word model trains on the shared examples: its config as it is, no arrays of its own."""
    return config, {}

def serving(data: dict, meta: dict, task_cfg):
    """What the logged model needs to continue raw text (`spec`), and an input example: two of the prompts."""
    import pandas as pd

    spec = {"vocab": meta["vocab"], "max_len": meta["max_len"], "n_words": task_cfg.generate.n_words}
    return spec, pd.DataFrame({"text": list(task_cfg.generate.prompts[:2])})
