"""params.yaml as frozen dataclasses, loaded once; an unknown, missing or impossible value is an error.

params.yaml is task-first (`passengers.train.lr`), so each DVC stage can declare just its own task's keys.
A check in __post_init__ raises ValueError("<key> must ..."); load_params() turns it into a PipelineError
that names the full key (`params.yaml: passengers.train.lr must be > 0, got -1`).
"""
import typing
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

from stages import loader
from stages.errors import PipelineError

ROOT = Path(__file__).resolve().parent.parent


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _at_least(cfg, low, *names: str) -> None:
    """Each named field of cfg is >= low."""
    for name in names:
        value = getattr(cfg, name)
        _require(value >= low, f"{name} must be >= {low}, got {value}")


def _fraction(cfg, *names: str, zero: bool = False) -> None:
    """Each named field of cfg is in (0, 1), or [0, 1) with zero=True."""
    for name in names:
        value = getattr(cfg, name)
        _require((0 <= value if zero else 0 < value) and value < 1,
                 f"{name} must be in {'[' if zero else '('}0, 1), got {value}")


def _one_of(cfg, name: str, options: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    _require(value in options, f"{name} must be {', '.join(options[:-1])} or {options[-1]}, got {value!r}")


@dataclass(frozen=True)
class Download:
    source: str  # "bundled" (ships in a pip package, offline) or "url" (the official full data set)
    url: str
    checksum: str  # "sha256:<hex>" or "md5:<hex>"

    def __post_init__(self):
        _one_of(self, "source", ("bundled", "url"))


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
        _at_least(self, 1, "seq_length", "horizon")
        _require(all(lag >= self.horizon for lag in self.differences),
                 f"differences must all be >= horizon ({self.horizon}): a forecast may use only values it has seen, "
                 f"got {list(self.differences)}")
        _fraction(self, "val_ratio", "test_ratio")
        _require(self.val_ratio + self.test_ratio < 1, "val_ratio + test_ratio must be < 1")
        _one_of(self, "scaler", ("minmax", "standard"))


@dataclass(frozen=True)
class SeriesBaseline:
    season: int  # steps per season for the seasonal baselines; 0 = none
    ridge_alpha: float  # L2 penalty of the linear autoregression on the models' own windows
    sarima_order: tuple[int, ...]  # (p, d, q); [] = no SARIMA baseline
    sarima_seasonal_order: tuple[int, ...]  # (P, D, Q) at period `season`
    sarima_log: bool  # fit SARIMA to the log of the series
    ets_seasonal: str  # Holt-Winters (additive trend) with an "add" or "mul" season, or "none"

    def __post_init__(self):
        _at_least(self, 0, "season", "ridge_alpha")
        _require(len(self.sarima_order) in (0, 3) and len(self.sarima_seasonal_order) in (0, 3),
                 "sarima_order and sarima_seasonal_order must be [p, d, q] / [P, D, Q] or []")
        _one_of(self, "ets_seasonal", ("add", "mul", "none"))
        _require((not self.sarima_seasonal_order and self.ets_seasonal == "none") or self.season >= 2,
                 "a seasonal SARIMA or ETS baseline needs season >= 2")


@dataclass(frozen=True)
class RecurrentModel:
    hidden_size: int
    num_layers: int
    dropout: float

    def __post_init__(self):
        _at_least(self, 1, "hidden_size", "num_layers")
        _fraction(self, "dropout", zero=True)


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
        _one_of(self, "lr_schedule", ("constant", "cosine"))
        _at_least(self, 1, "batch_size", "epochs", "patience")
        _at_least(self, 0, "weight_decay")


@dataclass(frozen=True)
class SeededTrain(Train):
    seeds: int  # models trained, with seeds seed, seed+1, ...: the checkpoint keeps the best on validation

    def __post_init__(self):
        super().__post_init__()
        _at_least(self, 1, "seeds")


@dataclass(frozen=True)
class SeriesTrain(SeededTrain):
    ensemble: bool  # the reported forecast: the mean of the seeds' forecasts (true) or the kept seed's (false)


@dataclass(frozen=True)
class SeriesTask:
    download: Download
    preprocess: SeriesPreprocess
    baseline: SeriesBaseline
    model: RecurrentModel
    train: SeriesTrain
    kind: typing.ClassVar[str] = "series"
    models: typing.ClassVar[tuple] = ("rnn", "lstm", "gru", "hybrid_rnn", "hybrid_lstm", "hybrid_gru")


@dataclass(frozen=True)
class FileSetDownload:
    source: str  # "bundled" or "url"
    url: str  # base URL of the official files
    checksums: dict[str, str]  # file name -> "sha256:<hex>" or "md5:<hex>"

    def __post_init__(self):
        _one_of(self, "source", ("bundled", "url"))


@dataclass(frozen=True)
class ImagePreprocess:
    image_size: int
    val_ratio: float
    test_ratio: float
    split_seed: int  # seeds the stratified splits

    def __post_init__(self):
        _at_least(self, 8, "image_size")
        _fraction(self, "val_ratio", "test_ratio")


@dataclass(frozen=True)
class ClassifierBaseline:
    max_iter: int  # iterations of the logistic-regression baseline

    def __post_init__(self):
        _at_least(self, 1, "max_iter")


@dataclass(frozen=True)
class ImageModel:
    dropout: float

    def __post_init__(self):
        _fraction(self, "dropout", zero=True)


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
        _fraction(self, "jitter", zero=True)
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
        _at_least(self, 8, "image_size")
        _at_least(self, 1, "train_per_class", "val_per_class")


@dataclass(frozen=True)
class Finetune(Train):
    unfreeze_blocks: int  # how many of the backbone's last blocks train in the fine-tuning phase

    def __post_init__(self):
        super().__post_init__()
        _at_least(self, 1, "unfreeze_blocks")


@dataclass(frozen=True)
class TransferModel:
    backbone: str  # "cnn": the digits CNN that train@digits trains; "vgg16" / "resnet18": torchvision ImageNet weights
    input_size: int  # vgg16/resnet18: pixels per side the backbone sees (batches are upsampled to it)
    hidden_size: int  # vgg16/resnet18: units of the new head's hidden layer
    dropout: float  # vgg16/resnet18: dropout in the new head

    def __post_init__(self):
        _one_of(self, "backbone", ("cnn", "vgg16", "resnet18"))
        _require(self.input_size >= 32 and self.input_size % 32 == 0,
                 f"input_size must be a multiple of 32 (VGG16 halves the image 5 times), got {self.input_size}")
        _at_least(self, 1, "hidden_size")
        _fraction(self, "dropout", zero=True)


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
        _at_least(self, 1, "min_count")
        _require(self.max_vocab >= 0, f"max_vocab must be >= 0 (0: no cap), got {self.max_vocab}")
        _one_of(self, "sequences", ("prefix", "window"))
        _at_least(self, 1, "max_len")
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
        _at_least(self, 1, "n_words")
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
    train: SeededTrain
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
        _one_of(self, "device", ("auto", "cpu", "cuda", "mps"))
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


def _task_first(key: str) -> str | None:
    """What an unknown top-level key that is a stage's section means: a slip from task-first keys."""
    if key in STAGE_KEYS:
        return (f"keys are task-first, <task>.{key}.<key> (e.g. passengers.{key}, digits.{key}); "
                f"tasks: {', '.join(TASK_NAMES)}")
    return None


def load_params(path: Path = ROOT / "params.yaml") -> Params:
    return loader.load(Path(path), Params, _task_first)
