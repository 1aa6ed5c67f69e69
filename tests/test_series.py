"""Forecasting preprocessing and baselines on tiny arrays."""
import numpy as np
import pytest

from stages.infra.config import SeriesBaseline, SeriesPreprocess, load_params
from stages.infra.errors import PipelineError
from stages.kinds.series import baselines as series_baselines
from stages.kinds.series import data as series
from stages.kinds.series import metrics as series_metrics
from stages.kinds.series import predict as series_predict
from stages.kinds.series import prepare as series_prepare
from stages.kinds.series import train as series_train

# How the airline CSV is read (params.yaml passengers.preprocess)
READ = {"time": "Month", "value": "Passengers", "time_format": "%Y-%m", "frequency": "MS", "resample": False,
        "unit": "thousand passengers"}


def cfg(**overrides):
    values = READ | {"seq_length": 3, "horizon": 1, "val_ratio": 0.2, "test_ratio": 0.2, "scaler": "minmax",
                     "log": False, "differences": ()} | overrides
    return SeriesPreprocess(**values)


def test_chronological_split_keeps_time_order():
    assert series.chronological_split(10, val_ratio=0.2, test_ratio=0.3) == (5, 7)


def test_chronological_split_rejects_a_series_too_short():
    with pytest.raises(PipelineError, match="too short"):
        series.chronological_split(3, val_ratio=0.1, test_ratio=0.1)


def test_windows_predict_the_value_horizon_steps_after_the_window():
    values = np.arange(10.0)[:, None]
    targets = series.target_indices(0, 10, seq_length=3, horizon=2)
    x, y = series.make_windows(values, targets, seq_length=3, horizon=2)
    assert targets[0] == 4
    assert x[0, :, 0].tolist() == [0, 1, 2] and y[0, 0] == 4
    assert x[-1, :, 0].tolist() == [5, 6, 7] and y[-1, 0] == 9


def test_heldout_windows_reach_back_so_every_heldout_step_is_predicted_once():
    values = np.arange(20.0)
    arrays, _ = series_prepare.windows(values, cfg(), "passengers")
    # 20 steps: train [0, 12), val [12, 16), test [16, 20)
    assert arrays["index_val"].tolist() == [12, 13, 14, 15]
    assert arrays["index_test"].tolist() == [16, 17, 18, 19]
    assert arrays["index_train"].min() == 3 and arrays["index_train"].max() == 11


def test_scaler_is_fitted_on_the_training_part_only():
    values = np.arange(20.0)
    changed = values.copy()
    changed[12:] *= 100  # held-out values change; the scaled training data must not
    a, meta_a = series_prepare.windows(values, cfg(), "passengers")
    b, meta_b = series_prepare.windows(changed, cfg(), "passengers")
    np.testing.assert_array_equal(a["x_train"], b["x_train"])
    np.testing.assert_array_equal(a["y_train"], b["y_train"])
    assert meta_a["scaler"] == meta_b["scaler"] == {"kind": "minmax", "offset": 0.0, "scale": 11.0}


def test_standard_scaler_round_trips():
    values = np.array([1.0, 2.0, 3.0, 10.0])
    scaler = series.fit_scaler(values[:3], "standard")
    np.testing.assert_allclose(series.unscale(series.scale(values, scaler), scaler), values)
    assert scaler["offset"] == pytest.approx(2.0)


def test_seq_length_longer_than_the_training_part_names_the_param():
    with pytest.raises(PipelineError, match=r"passengers\.preprocess\.seq_length=50"):
        series_prepare.windows(np.arange(40.0), cfg(seq_length=50), "passengers")


def test_naive_and_seasonal_naive_baselines():
    values = np.arange(30.0)
    targets = np.array([26, 27])
    assert series_baselines.naive_forecast(values, targets, horizon=1).tolist() == [25, 26]
    assert series_baselines.naive_forecast(values, targets, horizon=3).tolist() == [23, 24]
    assert series_baselines.seasonal_naive_forecast(values, targets, horizon=1, season=12).tolist() == [14, 15]
    assert series_baselines.seasonal_naive_forecast(values, targets, horizon=13, season=12).tolist() == [2, 3]


def test_forecast_metrics_by_hand():
    metrics = series_metrics.forecast_metrics(np.array([100.0, 200.0]), np.array([110.0, 180.0]))
    assert metrics["mae"] == pytest.approx(15.0)
    assert metrics["rmse"] == pytest.approx(np.sqrt((100 + 400) / 2))
    assert metrics["mape"] == pytest.approx((10 + 10) / 2)


@pytest.mark.parametrize("rows, message", [
    ("1949-02,118\n1949-01,112\n1949-03,132\n", "not in increasing time order"),
    ("1949-01,112\n1949-01,118\n1949-02,132\n", "not in increasing time order"),
    ("1949-01,112\n1949-02,inf\n1949-03,132\n", "1 infinite values"),
])
def test_a_series_out_of_order_or_infinite_is_refused_naming_the_file(tmp_path, rows, message):
    path = tmp_path / "passengers.csv"
    path.write_text("Month,Passengers\n" + rows)
    with pytest.raises(PipelineError, match=f"passengers.csv: .*{message}"):
        series_prepare.read_series(path, cfg(), "passengers")
    passengers_csv(path, airline_like())
    assert series_prepare.read_series(path, cfg(), "passengers")[1].tolist() == airline_like().astype(float).tolist()


def seasonal_series(n: int = 96, seed: int = 0) -> np.ndarray:
    """A positive monthly-like series: trend, a season of 12 that grows with the level, and noise."""
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return (100 + 2 * t) * (1 + 0.2 * np.sin(2 * np.pi * t / 12)) * np.exp(rng.normal(0, 0.02, n))


@pytest.mark.parametrize("log, differences", [(False, ()), (True, ()), (True, (12,)), (True, (1, 12)), (False, (1,))])
def test_transform_and_invert_give_back_every_value(log, differences):
    """Forecasting the transformed series perfectly must give back the real values exactly."""
    values = seasonal_series()
    arrays, meta = series_prepare.windows(values, cfg(seq_length=4, log=log, differences=differences), "passengers")
    for split in ("train", "val", "test"):
        restored = series.invert(arrays[f"y_{split}"][:, 0].astype(np.float64), values, arrays[f"index_{split}"], meta)
        np.testing.assert_allclose(restored, values[arrays[f"index_{split}"]], rtol=1e-5)


def test_differenced_windows_use_only_the_past_and_keep_the_test_steps():
    values = seasonal_series()
    plain, _ = series_prepare.windows(values, cfg(seq_length=4), "passengers")
    diffed, _ = series_prepare.windows(values, cfg(seq_length=4, log=True, differences=(1, 12)), "passengers")
    assert diffed["index_test"].tolist() == plain["index_test"].tolist()  # the same steps are scored
    changed = values.copy()
    changed[plain["index_test"][0]:] *= 3  # the test part changes: training windows and scaler must not
    again, meta = series_prepare.windows(changed, cfg(seq_length=4, log=True, differences=(1, 12)), "passengers")
    np.testing.assert_array_equal(again["x_train"], diffed["x_train"])
    np.testing.assert_array_equal(again["y_train"], diffed["y_train"])


def test_differences_shorter_than_the_horizon_are_refused():
    with pytest.raises(ValueError, match="differences must all be >= horizon"):
        cfg(horizon=2, differences=(1,))


def test_sarima_forecasts_one_step_ahead_with_parameters_fixed_before_the_test_part():
    """ARIMA(0,1,1) by hand: forecast_t = y_{t-1} + theta * e_{t-1}, e_t = y_t - forecast_t, with the theta that
    was fitted on the first part only; changing later values changes no earlier forecast."""
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, 200)
    values = 50 + np.cumsum(noise[1:] + 0.6 * noise[:-1])  # an IMA(1,1) walk
    fit_end, targets = 150, np.arange(150, 199)
    predicted = series_baselines.sarima_forecast(values, fit_end, targets, (0, 1, 1), (0, 0, 0, 0), log=False)
    (theta,) = series.sarima_fit(values[:fit_end], (0, 1, 1), (0, 0, 0, 0))
    forecast, error = values[0], 0.0
    by_hand = []
    for t in range(1, len(values)):
        forecast = values[t - 1] + theta * error
        error = values[t] - forecast
        by_hand.append(forecast)
    np.testing.assert_allclose(predicted, np.array(by_hand)[targets - 1], rtol=1e-6)
    changed = values.copy()
    changed[170:] += 100
    again = series_baselines.sarima_forecast(changed, fit_end, targets, (0, 1, 1), (0, 0, 0, 0), log=False)
    np.testing.assert_array_equal(again[:21], predicted[:21])  # forecasts up to step 170 saw no changed value
    assert not np.allclose(again[21:], predicted[21:])


def test_classical_baselines_beat_naive_on_a_seasonal_series():
    values = seasonal_series(144)
    arrays, meta = series_prepare.windows(values, cfg(seq_length=12, val_ratio=0.1, test_ratio=0.2), "passengers")
    arrays["times"] = np.array([str(i) for i in range(len(values))])
    baseline = SeriesBaseline(season=12, ridge_alpha=0.001, sarima_order=(0, 1, 1), sarima_seasonal_order=(0, 1, 1),
                              sarima_log=True, ets_seasonal="mul")
    metrics, columns = series_baselines.baselines(arrays, meta, baseline)
    assert set(metrics) == {"naive", "seasonal_naive", "linear_ar", "sarima", "ets", "sarima_ets_mean"}
    assert len(columns["sarima"]) == len(arrays["index_test"])
    np.testing.assert_allclose(columns["sarima_ets_mean"], (np.array(columns["sarima"]) + columns["ets"]) / 2)
    for name in ("sarima", "ets", "linear_ar"):
        assert metrics[name]["rmse"] < metrics["naive"]["rmse"], name


def passengers_csv(path, values, final_newline=True):
    months = [f"{1949 + i // 12}-{i % 12 + 1:02d}" for i in range(len(values))]
    text = "Month,Passengers\n" + "\n".join(f"{m},{v}" for m, v in zip(months, values))
    path.write_text(text + ("\n" if final_newline else ""))
    return path


def airline_like(n=144):
    t = np.arange(n)
    return np.round((100 + 2 * t) * (1 + 0.2 * np.sin(2 * np.pi * t / 12))).astype(int)


def test_a_complete_series_file_reads(tmp_path):
    times, values = series_prepare.read_series(passengers_csv(tmp_path / "p.csv", airline_like()), cfg(), "passengers")
    assert len(values) == 144 and times[0] == "1949-01"


@pytest.mark.parametrize("text, declared, message", [
    ("date;litres\n2001-01;5\n", {}, r"passengers\.preprocess\.time: no column 'Month' in .*p\.csv \(its columns: "
                                     r"date, litres\)"),
    ("Month,sales\n2001-01,5\n", {}, r"passengers\.preprocess\.value: no column 'Passengers' .*\(its columns: Month, sales\)"),
    ("Month,Passengers\n01/2001,5\n", {}, r"passengers\.preprocess\.time_format '%Y-%m' does not read column 'Month'"),
    ("Month,Passengers\n2001-01,5\n2001-02,\n", {}, r"p\.csv: 1 empty or NaN values in column 'Passengers'"),
    ("Month,Passengers\n2001-01,5\n2001-02,many\n", {}, r"p\.csv: column 'Passengers' holds a value that is not a number"),
    ("Month,Passengers\n2001-01,5\n", {"frequency": "monthly"}, r"passengers\.preprocess\.frequency 'monthly' is "
                                                                 r"not a pandas frequency"),
])
def test_a_csv_that_does_not_match_its_declaration_is_one_line_naming_the_key(tmp_path, text, declared, message):
    path = tmp_path / "p.csv"
    path.write_text(text)
    with pytest.raises(PipelineError, match=message):
        series_prepare.read_series(path, cfg(**declared), "passengers")


def test_any_delimiter_and_time_format_read_and_hourly_records_resample(tmp_path):
    """A semicolon CSV with day-first times every 30 minutes, one hour missing: resampled to hourly means, the
    empty hour interpolated; times written in ISO 8601 to the hour."""
    path = tmp_path / "p.csv"
    path.write_text("when;temp\n01.02.2020 00:00;1\n01.02.2020 00:30;3\n01.02.2020 02:00;6\n01.02.2020 02:30;8\n")
    times, values = series_prepare.read_series(path, cfg(time="when", value="temp", time_format="%d.%m.%Y %H:%M",
                                                         frequency="h", resample=True), "passengers")
    assert times.tolist() == ["2020-02-01T00:00", "2020-02-01T01:00", "2020-02-01T02:00"]
    assert values.tolist() == [2.0, 4.5, 7.0]
    auto, _ = series_prepare.read_series(path, cfg(time="when", value="temp", time_format="auto", frequency="none"),
                                         "passengers")
    assert auto.tolist()[:2] == ["2020-01-02T00:00", "2020-01-02T00:30"]  # auto reads month first: say the format


def test_a_raw_folder_holds_one_csv(tmp_path):
    with pytest.raises(PipelineError, match=r"a series task reads one CSV file, found nothing"):
        series_prepare.the_csv(tmp_path, "passengers")
    (tmp_path / "a.csv").write_text("x\n")
    (tmp_path / "b.csv").write_text("x\n")
    with pytest.raises(PipelineError, match=r"a series task reads one CSV file, found a\.csv, b\.csv"):
        series_prepare.the_csv(tmp_path, "passengers")


AIRLINE = SeriesBaseline(season=12, ridge_alpha=0.001, sarima_order=(0, 1, 1), sarima_seasonal_order=(0, 1, 1),
                         sarima_log=True, ets_seasonal="mul")


def hybrid_setup(values):
    """A series' windows and a hybrid's classical part and residual training windows, as train makes them."""
    from types import SimpleNamespace

    arrays, meta = series_prepare.windows(values, cfg(seq_length=12, val_ratio=0.1, test_ratio=0.2, log=True,
                                              differences=(1, 12)), "passengers")
    config, own = series_train.model_inputs("hybrid_lstm", {}, arrays, meta, SimpleNamespace(baseline=AIRLINE))
    return arrays, meta, config["classical"], own


def test_hybrid_residuals_come_from_a_sarima_fitted_before_the_test_part_only():
    values = seasonal_series(144)
    arrays, _, classical, own = hybrid_setup(values)
    changed = values.copy()
    changed[arrays["index_test"][0]:] *= 1.5  # the test part changes: SARIMA and every training residual must not
    _, _, classical_again, own_again = hybrid_setup(changed)
    assert classical_again == classical
    for split in ("train", "val"):
        for a, b in zip(own[split], own_again[split]):
            np.testing.assert_array_equal(a, b)
    x, y = own["train"]
    assert x.shape[1:] == (12, 1) and y.shape[1:] == (1,) and len(x) == len(y) > 0
    # the training targets are the training part's own steps, after SARIMA's 13 differenced-away steps and a window
    assert len(y) == arrays["index_val"][0] - 13 - 12
    # the residual target is the SARIMA one-step error, scaled: the next window's last input
    np.testing.assert_allclose(x[1:, -1, 0], y[:-1, 0], rtol=1e-6)


def test_a_hybrid_forecast_uses_only_earlier_values_and_serve_gives_the_pipelines_forecast():
    import torch

    from stages.core.models import build_model

    values = seasonal_series(144)
    arrays, meta, classical, _ = hybrid_setup(values)
    torch.manual_seed(0)
    model = build_model("series", "hybrid_lstm", {"input_size": 1, "output_size": 1, "hidden_size": 8,
                                                  "num_layers": 1, "dropout": 0.0, "classical": classical})
    torch.nn.init.normal_(model.head.weight)  # a network that moves the forecast
    cpu = torch.device("cpu")
    predicted = series_predict.forecast(model, arrays, meta, "test", cpu)
    sarima = series_baselines.sarima_forecast(values, arrays["index_val"][-1] + 1, arrays["index_test"], (0, 1, 1),
                                              (0, 1, 1, 12), log=True)
    assert not np.allclose(predicted, sarima)  # the network adds to SARIMA's forecast
    start = int(arrays["index_test"][0])
    changed = values.copy()
    changed[start + 10:] *= 1.3
    again = series_predict.forecast(model, arrays | {"series": changed}, meta, "test", cpu)
    np.testing.assert_allclose(again[:11], predicted[:11], rtol=1e-12)  # forecasts up to step start+10 saw no change
    assert not np.allclose(again[11:], predicted[11:])
    served = series_predict.serve(model, values[None, :start + 5], {"seq_length": 12, "differences": [1, 12],
                                                                     "horizon": 1, "unit": "x"})
    np.testing.assert_allclose(served, predicted[5:6], rtol=1e-6)
    with pytest.raises(ValueError, match="at least 25 values"):
        series_predict.serve(model, values[None, :20], {"seq_length": 12, "differences": [1, 12], "horizon": 1,
                                                        "unit": "x"})


def test_a_hybrid_competes_untrained_in_early_stopping_and_a_plain_model_does_not():
    """Epoch 0 of a hybrid is its classical forecast alone: its validation loss is the mean squared residual."""
    import torch

    from stages.core.models import build_model
    from stages.train import untrained

    config = {"input_size": 1, "output_size": 1, "hidden_size": 4, "num_layers": 1, "dropout": 0.0}
    val = (torch.randn(6, 12, 1), torch.randn(6, 1))
    start = untrained(build_model("series", "hybrid_rnn", config | {"classical": {}}), val, 4)
    assert start["epoch"] == 0 and start["val_loss"] == pytest.approx(float(val[1].square().mean()))
    assert untrained(build_model("series", "rnn", config), val, 4) is None


def test_a_header_only_series_csv_names_the_file(tmp_path):
    path = tmp_path / "airline-passengers.csv"
    path.write_text("Month,Passengers\n")
    with pytest.raises(PipelineError, match=rf"{path}: no data rows"):
        series_prepare.read_series(path, cfg(), "passengers")


def test_every_prepared_series_keeps_its_transform_in_meta():
    """invert() needs log and differences from meta.json: preprocess writes them (a tiny series here)."""
    values = np.arange(1.0, 41.0)
    cfg = load_params().task("passengers").preprocess
    _, meta = series_prepare.windows(values, cfg, "passengers")
    assert meta["log"] == cfg.log and meta["differences"] == list(cfg.differences)


def test_a_repeated_sarima_filter_answers_from_memory_with_the_same_forecasts():
    """Every hybrid and seed of a task filters the same series with the same SARIMA: evaluate asks once."""
    t = np.arange(60)
    z = np.log(100 + 2 * t + 10 * np.sin(2 * np.pi * t / 12))
    params, order, seasonal = [0.3, -0.2, 0.01], (1, 1, 0), (0, 1, 1, 12)
    series._ONE_STEP.clear()
    first = series.sarima_one_step(z, params, order, seasonal)
    first[:] = 0  # the caller's copy: changing it changes no later answer
    again = series.sarima_one_step(z.copy(), np.array(params), list(order), list(seasonal))
    assert len(series._ONE_STEP) == 1
    np.testing.assert_array_equal(again, series._filter(z, params, order, seasonal))
    other = series.sarima_one_step(z[:48], params, order, seasonal)  # another series: its own forecasts
    assert len(series._ONE_STEP) == 2 and np.array_equal(other, again[:48])  # a forecast uses the past only


def trained_bytes(values: np.ndarray) -> tuple[bytes, bytes]:
    """(the baselines' metrics as JSON, a hybrid LSTM trained 3 epochs on them: checkpoint bytes + test metrics)."""
    import io
    import json
    from types import SimpleNamespace

    import torch

    from stages.core.models import build_model
    from stages.core.training import fit, seed_everything
    from stages.infra.config import SeriesTrain

    series._ONE_STEP.clear()
    series_train._CLASSICAL.clear()
    arrays, meta = series_prepare.windows(values, cfg(seq_length=12, val_ratio=0.1, test_ratio=0.2, log=True,
                                              differences=(1, 12)), "passengers")
    arrays["times"] = np.arange(len(values)).astype(str)
    baseline_metrics, _ = series_baselines.baselines(arrays, meta, AIRLINE)
    config, own = series_train.model_inputs("hybrid_lstm", {"input_size": 1, "output_size": 1, "hidden_size": 8,
                                                            "num_layers": 1, "dropout": 0.0}, arrays, meta,
                                            SimpleNamespace(baseline=AIRLINE))
    train = SeriesTrain(**(load_params().task("passengers").train.__dict__ | {"epochs": 3, "seeds": 1}))
    generator = seed_everything(0)
    model = build_model("series", "hybrid_lstm", config)
    tensors = [tuple(torch.from_numpy(a) for a in own[s]) for s in ("train", "val")]
    best, _ = fit(model, *tensors, train, generator)
    model.load_state_dict(best["state_dict"])
    buffer = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "config": config}, buffer)
    metrics, _ = series_predict.score(model.eval(), arrays, meta, torch.device("cpu"))
    return json.dumps(baseline_metrics).encode(), buffer.getvalue() + json.dumps(metrics).encode()


def test_classical_fits_moved_by_1e_9_give_byte_identical_checkpoints_and_metrics(monkeypatch):
    """Where the CPU kernels cannot be pinned (stages/core/kernels.py), the classical fits still differ between machines
    by their optimizers' noise. SARIMA is settled on a grid by likelihood and ETS rounded, so a fit moved by 1e-9
    relative (well above the 1e-12 the kernels move a likelihood) changes no baseline metric, no hybrid checkpoint
    byte and no hybrid metric. Real data: the airline passengers pmdarima ships."""
    from pmdarima.datasets import load_airpassengers

    values = load_airpassengers().astype(np.float64)
    reference = trained_bytes(values)
    sarima_mle, ets_mle = series._mle, series_baselines._ets_mle
    monkeypatch.setattr(series, "_mle", lambda model: sarima_mle(model) * (1 + 1e-9))
    monkeypatch.setattr(series_baselines, "_ets_mle", lambda model: ets_mle(model) * (1 - 1e-9))
    assert trained_bytes(values) == reference
    # and the settling is what absorbs it: the optimizer's own answer, moved by 1e-9, does move the metrics
    monkeypatch.setattr(series, "best_on_grid", lambda loglike, start, step: start)
    assert trained_bytes(values)[0] != reference[0]


def test_best_on_grid_climbs_to_the_grid_maximum_from_nearby_starts():
    """A correlated concave quadratic with its maximum off the grid: every start near it reaches the same point,
    the best grid point (checked by brute force over the grid around it)."""
    peak = np.array([0.3217, -0.5664])
    cov_inv = np.array([[120.0, 90.0], [90.0, 110.0]])

    def loglike(p):
        return -float((p - peak) @ cov_inv @ (p - peak))

    grid = [np.array([i, j]) * 1e-3 for i in range(300, 340) for j in range(-590, -540)]
    best = max(grid, key=loglike)
    for start in (peak, peak + 4e-4, peak - [6e-4, -2e-4], peak + [1.4e-3, 0.9e-3]):
        np.testing.assert_array_equal(series.best_on_grid(loglike, start, 1e-3), best)
