"""The image-classification kind's baselines (stage baseline): the majority class, and logistic regression on the
pixels, scored on the same test images as the models."""
import numpy as np


def pixels(images: np.ndarray, side: int = 32) -> np.ndarray:
    """Flattened pixels in [0, 1], average-pooled down to at most side x side so large photos stay cheap."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(images).float() / 255
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (N, C, H, W)
    if x.shape[-1] > side:
        x = F.adaptive_avg_pool2d(x, side)
    return x.flatten(1).numpy()


def baselines(data: dict, meta: dict, cfg) -> tuple[dict, dict]:
    """The majority class, and logistic regression on the pixels; (metrics, predicted class names per baseline)."""
    from sklearn.linear_model import LogisticRegression

    y_train, y_test = data["y_train"], data["y_test"]
    majority = np.full_like(y_test, np.bincount(y_train).argmax())
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # one BLAS thread: the same coefficients on every run, whatever the load
        # tol 1e-8, not sklearn's 1e-4: stopped early, L-BFGS stops where the BLAS kernels steer it (measured on
        # digits: accuracy 0.894 with OpenBLAS's Haswell kernels, 0.897 with Sandybridge's); converged, both agree
        logistic = LogisticRegression(max_iter=cfg.max_iter, tol=1e-8).fit(pixels(data["x_train"]), y_train)
    if logistic.n_iter_.max() >= cfg.max_iter:
        print(f"warning: params.yaml: baseline.max_iter={cfg.max_iter}: logistic regression did not converge; "
              "its accuracy may differ between machines (raise max_iter)")
    predictions = {"majority": majority, "logistic_pixels": logistic.predict(pixels(data["x_test"]))}
    metrics = {name: {"accuracy": float((p == y_test).mean())} for name, p in predictions.items()}
    names = meta["classes"]
    columns = {"actual": [names[i] for i in y_test]}
    return metrics, columns | {k: [names[i] for i in p] for k, p in predictions.items()}
