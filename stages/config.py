"""params.yaml as frozen dataclasses, loaded once; an unknown, missing or impossible value is an error.

params.yaml is task-first (`passengers.train.lr`), so each DVC stage can declare just its own task's keys.
A check in __post_init__ raises ValueError("<key> must ..."); load_params() turns it into a PipelineError
that names the full key (`params.yaml: passengers.train.lr must be > 0, got -1`).
"""
import typing
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

import yaml

from stages.errors import PipelineError

ROOT = Path(__file__).resolve().parent.parent


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class Download:
    source: str  # "bundled" (ships in a pip package, offline) or "url" (the official full data set)
    url: str
    checksum: str  # "sha256:<hex>" or "md5:<hex>"

    def __post_init__(self):
        _require(self.source in ("bundled", "url"), f"source must be bundled or url, got {self.source!r}")


@dataclass(frozen=True)
class SeriesPreprocess:
    seq_length: int
    horizon: int
    val_ratio: float
    test_ratio: float
    scaler: str

    def __post_init__(self):
        _require(self.seq_length >= 1, f"seq_length must be >= 1, got {self.seq_length}")
        _require(self.horizon >= 1, f"horizon must be >= 1, got {self.horizon}")
        _require(0 < self.val_ratio < 1, f"val_ratio must be in (0, 1), got {self.val_ratio}")
        _require(0 < self.test_ratio < 1, f"test_ratio must be in (0, 1), got {self.test_ratio}")
        _require(self.val_ratio + self.test_ratio < 1, "val_ratio + test_ratio must be < 1")
        _require(self.scaler in ("minmax", "standard"), f"scaler must be minmax or standard, got {self.scaler!r}")


@dataclass(frozen=True)
class SeriesBaseline:
    season: int  # steps per season for the seasonal-naive baseline; 0 = none

    def __post_init__(self):
        _require(self.season >= 0, f"season must be >= 0, got {self.season}")


@dataclass(frozen=True)
class RecurrentModel:
    hidden_size: int
    num_layers: int
    dropout: float

    def __post_init__(self):
        _require(self.hidden_size >= 1, f"hidden_size must be >= 1, got {self.hidden_size}")
        _require(self.num_layers >= 1, f"num_layers must be >= 1, got {self.num_layers}")
        _require(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class Train:
    lr: float
    batch_size: int
    epochs: int
    patience: int
    weight_decay: float

    def __post_init__(self):
        _require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _require(self.patience >= 1, f"patience must be >= 1, got {self.patience}")
        _require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")


@dataclass(frozen=True)
class SeriesTask:
    download: Download
    preprocess: SeriesPreprocess
    baseline: SeriesBaseline
    model: RecurrentModel
    train: Train
    kind: typing.ClassVar[str] = "series"
    models: typing.ClassVar[tuple] = ("rnn", "lstm", "gru")


@dataclass(frozen=True)
class Run:
    task: str
    model: str


@dataclass(frozen=True)
class Params:
    device: str
    seed: int
    tasks: tuple[str, ...]
    runs: dict[str, Run]
    passengers: SeriesTask
    temperature: SeriesTask

    def __post_init__(self):
        _require(self.device in ("auto", "cpu", "cuda", "mps"), f"device must be auto, cpu, cuda or mps, got {self.device!r}")
        for name in self.tasks:
            _require(name in TASK_NAMES, f"tasks: unknown task {name!r} (known: {', '.join(TASK_NAMES)})")
        for key, run in self.runs.items():
            _require(run.task in TASK_NAMES, f"runs.{key}.task: unknown task {run.task!r}")
            known = getattr(self, run.task).models
            _require(run.model in known, f"runs.{key}.model: unknown model {run.model!r} for {run.task} (known: {', '.join(known)})")

    def task(self, name: str):
        if name not in TASK_NAMES:
            raise PipelineError(f"unknown task {name!r} (known: {', '.join(TASK_NAMES)})")
        return getattr(self, name)


TASK_NAMES = tuple(f.name for f in fields(Params) if is_dataclass(typing.get_type_hints(Params)[f.name]))


def _convert(value, kind, where: str):
    """Check `value` against the annotation `kind`, recursing into dataclasses, tuples and dicts."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if is_dataclass(kind):
        return _build(kind, value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise PipelineError(f"params.yaml: {where} must be a list, got {value!r}")
        return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise PipelineError(f"params.yaml: {where} must be a mapping, got {value!r}")
        return {k: _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PipelineError(f"params.yaml: {where} must be {kind.__name__}, got {value!r}")
    return value


def _build(cls, raw, where: str):
    if not isinstance(raw, dict):
        raise PipelineError(f"params.yaml: {where or 'the file'} must be a mapping, got {raw!r}")
    prefix = f"{where}." if where else ""
    names = [f.name for f in fields(cls)]
    for key in raw:
        if key not in names:
            raise PipelineError(f"params.yaml: unknown key {prefix}{key}")
    for name in names:
        if name not in raw:
            raise PipelineError(f"params.yaml: missing key {prefix}{name}")
    hints = typing.get_type_hints(cls)
    values = {name: _convert(raw[name], hints[name], prefix + name) for name in names}
    try:
        return cls(**values)
    except ValueError as err:
        raise PipelineError(f"params.yaml: {prefix}{err}") from None


def load_params(path: Path = ROOT / "params.yaml") -> Params:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise PipelineError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    return _build(Params, raw, "")
