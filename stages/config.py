"""params.yaml as frozen dataclasses, loaded once; an unknown, missing or impossible value is an error.

params.yaml is task-first (`passengers.train.lr`), so each DVC stage can declare just its own task's keys.
A check in __post_init__ raises ValueError("<key> must ..."); load_params() turns it into a PipelineError
that names the full key (`params.yaml: passengers.train.lr must be > 0, got -1`).
"""
import re
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
    log: bool  # model the log of the series: a season that grows with the level becomes additive
    differences: tuple[int, ...]  # lags differenced away before windowing, in order (12: seasonal, 1: first)

    def __post_init__(self):
        _require(self.seq_length >= 1, f"seq_length must be >= 1, got {self.seq_length}")
        _require(self.horizon >= 1, f"horizon must be >= 1, got {self.horizon}")
        _require(all(lag >= self.horizon for lag in self.differences),
                 f"differences must all be >= horizon ({self.horizon}): a forecast may use only values it has seen, "
                 f"got {list(self.differences)}")
        _require(0 < self.val_ratio < 1, f"val_ratio must be in (0, 1), got {self.val_ratio}")
        _require(0 < self.test_ratio < 1, f"test_ratio must be in (0, 1), got {self.test_ratio}")
        _require(self.val_ratio + self.test_ratio < 1, "val_ratio + test_ratio must be < 1")
        _require(self.scaler in ("minmax", "standard"), f"scaler must be minmax or standard, got {self.scaler!r}")


@dataclass(frozen=True)
class SeriesBaseline:
    season: int  # steps per season for the seasonal baselines; 0 = none
    ridge_alpha: float  # L2 penalty of the linear autoregression on the models' own windows
    sarima_order: tuple[int, ...]  # (p, d, q); [] = no SARIMA baseline
    sarima_seasonal_order: tuple[int, ...]  # (P, D, Q) at period `season`
    sarima_log: bool  # fit SARIMA to the log of the series
    ets_seasonal: str  # Holt-Winters (additive trend) with an "add" or "mul" season, or "none"

    def __post_init__(self):
        _require(self.season >= 0, f"season must be >= 0, got {self.season}")
        _require(self.ridge_alpha >= 0, f"ridge_alpha must be >= 0, got {self.ridge_alpha}")
        _require(len(self.sarima_order) in (0, 3) and len(self.sarima_seasonal_order) in (0, 3),
                 "sarima_order and sarima_seasonal_order must be [p, d, q] / [P, D, Q] or []")
        _require(self.ets_seasonal in ("add", "mul", "none"), f"ets_seasonal must be add, mul or none, got {self.ets_seasonal!r}")
        _require((not self.sarima_seasonal_order and self.ets_seasonal == "none") or self.season >= 2,
                 "a seasonal SARIMA or ETS baseline needs season >= 2")


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
    lr_schedule: str  # constant, or cosine: decays lr to 0 over `epochs`

    def __post_init__(self):
        _require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _require(self.lr_schedule in ("constant", "cosine"), f"lr_schedule must be constant or cosine, got {self.lr_schedule!r}")
        _require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _require(self.patience >= 1, f"patience must be >= 1, got {self.patience}")
        _require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")


@dataclass(frozen=True)
class SeriesTrain(Train):
    seeds: int  # models trained, with seeds seed, seed+1, ...: the checkpoint keeps the best on validation

    def __post_init__(self):
        super().__post_init__()
        _require(self.seeds >= 1, f"seeds must be >= 1, got {self.seeds}")


@dataclass(frozen=True)
class SeriesTask:
    download: Download
    preprocess: SeriesPreprocess
    baseline: SeriesBaseline
    model: RecurrentModel
    train: SeriesTrain
    kind: typing.ClassVar[str] = "series"
    models: typing.ClassVar[tuple] = ("rnn", "lstm", "gru")


@dataclass(frozen=True)
class FileSetDownload:
    source: str  # "bundled" or "url"
    url: str  # base URL of the official files
    checksums: dict[str, str]  # file name -> "sha256:<hex>" or "md5:<hex>"

    def __post_init__(self):
        _require(self.source in ("bundled", "url"), f"source must be bundled or url, got {self.source!r}")


@dataclass(frozen=True)
class ImagePreprocess:
    image_size: int
    val_ratio: float
    test_ratio: float
    split_seed: int  # seeds the stratified splits

    def __post_init__(self):
        _require(self.image_size >= 8, f"image_size must be >= 8, got {self.image_size}")
        _require(0 < self.val_ratio < 1, f"val_ratio must be in (0, 1), got {self.val_ratio}")
        _require(0 < self.test_ratio < 1, f"test_ratio must be in (0, 1), got {self.test_ratio}")


@dataclass(frozen=True)
class ClassifierBaseline:
    max_iter: int  # iterations of the logistic-regression baseline

    def __post_init__(self):
        _require(self.max_iter >= 1, f"max_iter must be >= 1, got {self.max_iter}")


@dataclass(frozen=True)
class ImageModel:
    dropout: float

    def __post_init__(self):
        _require(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class Augment:
    enabled: bool
    flip: bool
    crop_scale: tuple[float, ...]  # (min, max) share of the image area kept by the random resized crop
    rotation: float  # degrees, uniform in +-rotation
    jitter: float  # brightness/contrast/saturation factors in [1 - jitter, 1 + jitter]
    elastic: float  # pixels: largest displacement of the smooth random warp (0: off)
    elastic_sigma: float  # pixels: width of the Gaussian that smooths the warp

    def __post_init__(self):
        _require(len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1,
                 f"crop_scale must be [min, max] with 0 < min <= max <= 1, got {list(self.crop_scale)}")
        _require(0 <= self.rotation <= 180, f"rotation must be in [0, 180] degrees (images turn by +-rotation), "
                                            f"got {self.rotation}")
        _require(0 <= self.jitter < 1, f"jitter must be in [0, 1), got {self.jitter}")
        _require(self.elastic >= 0 and self.elastic_sigma > 0,
                 f"elastic must be >= 0 and elastic_sigma > 0, got {self.elastic} and {self.elastic_sigma}")


@dataclass(frozen=True)
class ImageTrain(Train):
    augment: Augment


@dataclass(frozen=True)
class ImageTask:
    download: Download
    preprocess: ImagePreprocess
    baseline: ClassifierBaseline
    model: ImageModel
    train: ImageTrain
    kind: typing.ClassVar[str] = "images"


@dataclass(frozen=True)
class DigitsTask(ImageTask):
    download: FileSetDownload
    models: typing.ClassVar[tuple] = ("cnn", "cnn2", "simple_cnn")


@dataclass(frozen=True)
class FlowersTask(ImageTask):
    download: Download
    models: typing.ClassVar[tuple] = ("flower_cnn", "small_cnn")


@dataclass(frozen=True)
class TransferPreprocess:
    image_size: int  # the target images are upsampled to the pretrained network's input size
    train_per_class: int  # labelled target images per class: transfer pays off when labels are few
    val_per_class: int
    split_seed: int  # seeds which images are the labelled ones

    def __post_init__(self):
        _require(self.image_size >= 8, f"image_size must be >= 8, got {self.image_size}")
        _require(self.train_per_class >= 1, f"train_per_class must be >= 1, got {self.train_per_class}")
        _require(self.val_per_class >= 1, f"val_per_class must be >= 1, got {self.val_per_class}")


@dataclass(frozen=True)
class Finetune(Train):
    unfreeze_blocks: int  # how many of the backbone's last blocks train in the fine-tuning phase

    def __post_init__(self):
        super().__post_init__()
        _require(self.unfreeze_blocks >= 1, f"unfreeze_blocks must be >= 1, got {self.unfreeze_blocks}")


@dataclass(frozen=True)
class TransferModel:
    backbone: str  # "cnn": the digits CNN that train@digits trains; "vgg16" / "resnet18": torchvision ImageNet weights
    input_size: int  # vgg16/resnet18: pixels per side the backbone sees (batches are upsampled to it)
    hidden_size: int  # vgg16/resnet18: units of the new head's hidden layer
    dropout: float  # vgg16/resnet18: dropout in the new head

    def __post_init__(self):
        _require(self.backbone in ("cnn", "vgg16", "resnet18"),
                 f"backbone must be cnn, vgg16 or resnet18, got {self.backbone!r}")
        _require(self.input_size >= 32 and self.input_size % 32 == 0,
                 f"input_size must be a multiple of 32 (VGG16 halves the image 5 times), got {self.input_size}")
        _require(self.hidden_size >= 1, f"hidden_size must be >= 1, got {self.hidden_size}")
        _require(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class TransferTask:
    download: Download
    preprocess: TransferPreprocess
    baseline: ClassifierBaseline
    model: TransferModel
    scratch: Train
    extract: Train
    finetune: Finetune
    kind: typing.ClassVar[str] = "images"
    models: typing.ClassVar[tuple] = ("scratch", "extract", "finetune")

    def __post_init__(self):
        # the digits CNN reads 1-channel digits; ImageNet networks read the 3-channel CIFAR-10 images
        on_cifar = self.download.source == "url"
        _require(on_cifar == (self.model.backbone != "cnn"),
                 f"model.backbone {self.model.backbone} does not fit download.source {self.download.source}: "
                 "use backbone cnn with source bundled (UCI digits), or vgg16/resnet18 with source url (CIFAR-10)")


@dataclass(frozen=True)
class TextPreprocess:
    min_count: int  # words seen fewer times in the training part become <unk>
    max_vocab: int  # 0 = no cap
    sequences: str  # "prefix": every prefix of every line (the original); "window": fixed windows of max_len
    max_len: int  # context length in words
    val_ratio: float
    test_ratio: float

    def __post_init__(self):
        _require(self.min_count >= 1, f"min_count must be >= 1, got {self.min_count}")
        _require(self.max_vocab >= 0, f"max_vocab must be >= 0 (0: no cap), got {self.max_vocab}")
        _require(self.sequences in ("prefix", "window"), f"sequences must be prefix or window, got {self.sequences!r}")
        _require(self.max_len >= 1, f"max_len must be >= 1, got {self.max_len}")
        _require(0 < self.val_ratio < 1 and 0 < self.test_ratio < 1 and self.val_ratio + self.test_ratio < 1,
                 "val_ratio and test_ratio must be in (0, 1) with a sum < 1")


@dataclass(frozen=True)
class LanguageModel:
    embedding_dim: int
    hidden_size: int
    num_layers: int
    dropout: float
    tie_embeddings: bool  # the output layer reuses the input embedding's weights (needs embedding_dim = hidden_size)

    def __post_init__(self):
        _require(self.embedding_dim >= 1 and self.hidden_size >= 1 and self.num_layers >= 1,
                 "embedding_dim, hidden_size and num_layers must be >= 1")
        _require(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        _require(not self.tie_embeddings or self.embedding_dim == self.hidden_size,
                 f"tie_embeddings needs embedding_dim = hidden_size, got {self.embedding_dim} and {self.hidden_size}")


@dataclass(frozen=True)
class Generate:
    prompts: tuple[str, ...]  # seed phrases to continue
    n_words: int
    temperature: float  # > 0: the sampled continuation's temperature (the greedy one is always written too)

    def __post_init__(self):
        _require(self.n_words >= 1, f"n_words must be >= 1, got {self.n_words}")
        _require(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")


def _weights(values: tuple, name: str) -> None:
    _require(len(values) > 0 and all(0 <= w <= 1 for w in values), f"{name} must be a non-empty list of weights "
                                                                    f"in [0, 1], got {list(values)}")


@dataclass(frozen=True)
class TextBaseline:
    bigram_weights: tuple[float, ...]  # Jelinek-Mercer weights of the bigram against the unigram; validation picks
    kn_orders: tuple[int, ...]  # Kneser-Ney orders tried; validation picks one

    def __post_init__(self):
        _weights(self.bigram_weights, "bigram_weights")
        _require(len(self.kn_orders) > 0 and all(n >= 2 for n in self.kn_orders),
                 f"kn_orders must be a non-empty list of orders >= 2, got {list(self.kn_orders)}")


@dataclass(frozen=True)
class Interpolate:
    weights: tuple[float, ...]  # network weights lambda tried in lambda P_network + (1 - lambda) P_KN

    def __post_init__(self):
        _weights(self.weights, "weights")


@dataclass(frozen=True)
class TextTask:
    download: Download
    preprocess: TextPreprocess
    baseline: TextBaseline
    model: LanguageModel
    train: SeriesTrain  # Train with seeds, as the forecasters have
    interpolate: Interpolate
    generate: Generate
    kind: typing.ClassVar[str] = "text"
    models: typing.ClassVar[tuple] = ("rnn", "lstm", "gru")

    def __post_init__(self):
        _require(max(self.baseline.kn_orders) - 1 <= self.preprocess.max_len,
                 f"baseline.kn_orders: order {max(self.baseline.kn_orders)} needs contexts of "
                 f"{max(self.baseline.kn_orders) - 1} words, longer than preprocess.max_len={self.preprocess.max_len}")


@dataclass(frozen=True)
class Run:
    kind: str  # the task's kind, as in `tasks` (dvc.yaml declares the train stage's code from it)
    models: tuple[str, ...]  # the models train@<task> trains, one after another in one process


@dataclass(frozen=True)
class Params:
    device: str
    seed: int
    tasks: dict[str, str]  # task -> its kind
    runs: dict[str, Run]  # task -> what its train stage trains
    passengers: SeriesTask
    temperature: SeriesTask
    digits: DigitsTask
    flowers: FlowersTask
    transfer: TransferTask
    text: TextTask

    def __post_init__(self):
        _require(self.device in ("auto", "cpu", "cuda", "mps"), f"device must be auto, cpu, cuda or mps, got {self.device!r}")
        # the tasks that train several
        most_seeds = max(self.passengers.train.seeds, self.temperature.train.seeds, self.text.train.seeds)
        _require(0 <= self.seed and self.seed + most_seeds - 1 < 2**32,  # NumPy's seed range, with seed + k for k seeds
                 f"seed must be in [0, 2**32 - {most_seeds}] (a task trains {most_seeds} seeds from it), got {self.seed}")
        for name, kind in self.tasks.items():
            _require(name in TASK_NAMES, f"tasks: unknown task {name!r} (known: {', '.join(TASK_NAMES)})")
            _require(kind == getattr(self, name).kind, f"tasks.{name} must be {getattr(self, name).kind}, the kind "
                                                       f"of its data (it names the code its stages run), got {kind!r}")
        for name, run in self.runs.items():
            _require(name in TASK_NAMES, f"runs: unknown task {name!r} (known: {', '.join(TASK_NAMES)})")
            _require(name != "transfer", "runs.transfer: transfer trains in its own scratch/extract/finetune stages")
            _require(run.kind == getattr(self, name).kind, f"runs.{name}.kind must be {getattr(self, name).kind}, "
                                                           f"as in tasks, got {run.kind!r}")
            known = getattr(self, name).models
            _require(len(run.models) > 0, f"runs.{name}.models is empty: list the models to train, or drop the entry")
            _require(len(set(run.models)) == len(run.models), f"runs.{name}.models lists a model twice: {list(run.models)}")
            for model in run.models:
                _require(model in known, f"runs.{name}.models: unknown model {model!r} for {name} (known: {', '.join(known)})")

    def trained_models(self, task: str) -> list[str]:
        """The models of a task: its runs entry, or for transfer its three phases."""
        if task == "transfer":
            return list(self.transfer.models)
        if task not in self.runs:
            raise PipelineError(f"params.yaml: runs has no entry for task {task}")
        return list(self.runs[task].models)

    def task(self, name: str):
        if name not in TASK_NAMES:
            raise PipelineError(f"unknown task {name!r} (known: {', '.join(TASK_NAMES)})")
        return getattr(self, name)


TASK_NAMES = tuple(f.name for f in fields(Params) if is_dataclass(typing.get_type_hints(Params)[f.name]))
# The sections a task has (download, preprocess, train, ...): as a top-level key, one is a task-first slip.
STAGE_KEYS = {f.name for name in TASK_NAMES for f in fields(typing.get_type_hints(Params)[name])}


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
    if kind is float and isinstance(value, str) and FLOAT.fullmatch(value):
        return float(value)  # 1e-3: YAML 1.1 (PyYAML) reads it as a string, YAML 1.2 (DVC) as the number meant
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PipelineError(f"params.yaml: {where} must be {kind.__name__}, got {value!r}")
    return value


def _build(cls, raw, where: str):
    if not isinstance(raw, dict):
        raise PipelineError(f"params.yaml: {where or 'the file'} must be a mapping, got {raw!r}")
    prefix = f"{where}." if where else ""
    names = [f.name for f in fields(cls)]
    for key in raw:
        if key not in names and not where and key in STAGE_KEYS:  # e.g. `dvc exp run -S +train.lr=0.01`
            raise PipelineError(f"params.yaml: unknown top-level key {key}: keys are task-first, <task>.{key}.<key> "
                                f"(e.g. passengers.{key}, digits.{key}); tasks: {', '.join(TASK_NAMES)}")
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


FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; DVC refuses the file: refuse it here too, naming the key."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _first_lines(err: yaml.YAMLError) -> str:
    """The problem and where it is (`duplicate key 'lr' in "params.yaml", line 50`) on one line."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{problem}, line {mark.line + 1}" if mark else problem


def load_params(path: Path = ROOT / "params.yaml") -> Params:
    try:
        raw = yaml.load(Path(path).read_text(), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise PipelineError(f"{path}: not valid YAML ({_first_lines(err)})") from None
    if raw is None:
        raise PipelineError(f"{path}: the file is empty; it holds every param of the pipeline (git checkout -- {path.name})")
    return _build(Params, raw, "")
