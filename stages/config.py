"""params.yaml as frozen dataclasses, loaded once; an unknown, missing or impossible value is an error.

params.yaml is task-first (`passengers.train.lr`), so each DVC stage can declare just its own task's keys. A field's
annotation carries its rule (`lr: Positive`, checked by stages/loader.py), check() what relates fields; a refusal
names the full key (`params.yaml: passengers.train.lr must be > 0, got -1`).
"""
import typing
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Annotated

from stages import loader
from stages.errors import PipelineError
from stages.loader import Checked, Count, NonNegative, Positive, Rate, Ratio, Rule, Weights, at_least, one_of, require

ROOT = Path(__file__).resolve().parent.parent
Orders = Annotated[tuple[int, ...], Rule(lambda v: len(v) > 0 and min(v) >= 2, "be a non-empty list of orders >= 2")]
Orders3 = Annotated[tuple[int, ...], Rule(lambda v: len(v) in (0, 3), "be three orders or []")]
Span = Annotated[tuple[float, ...], Rule(lambda v: len(v) == 2 and 0 < v[0] <= v[1] <= 1, "be [min, max], 0 < min <= max <= 1")]
Degrees = Annotated[float, Rule(lambda v: 0 <= v <= 180, "be in [0, 180] degrees (images turn by +-rotation)")]
Pixels32 = Annotated[int, Rule(lambda v: v >= 32 and v % 32 == 0, "be a multiple of 32 (VGG16 halves the image 5 times)")]
Models = Annotated[tuple[str, ...], Rule(lambda v: len(v) == len(set(v)) > 0, "list each model once (drop an entry with none)")]
Source = one_of("bundled", "url")  # "bundled" (ships in a pip package, offline) or "url" (the official full data set)


@dataclass(frozen=True)
class Download(Checked):
    source: Source
    url: str
    checksum: str  # "sha256:<hex>" or "md5:<hex>"


class Split(Checked):
    """A preprocess section's val_ratio and test_ratio (its own fields, in params.yaml's order) leave a train part."""
    def check(self):
        require(self.val_ratio + self.test_ratio < 1, "val_ratio + test_ratio must be < 1")


@dataclass(frozen=True)
class SeriesPreprocess(Split):
    seq_length: Count
    horizon: Count
    val_ratio: Ratio
    test_ratio: Ratio
    scaler: one_of("minmax", "standard")
    log: bool  # model the log of the series: a season that grows with the level becomes additive
    differences: tuple[int, ...]  # lags differenced away before windowing, in order (12: seasonal, 1: first)

    def check(self):
        require(all(lag >= self.horizon for lag in self.differences),
                f"differences must all be >= horizon ({self.horizon}): a forecast may use only values it has seen, "
                f"got {list(self.differences)}")
        super().check()


@dataclass(frozen=True)
class SeriesBaseline(Checked):
    season: at_least(0)  # steps per season for the seasonal baselines; 0 = none
    ridge_alpha: NonNegative  # L2 penalty of the linear autoregression on the models' own windows
    sarima_order: Orders3  # (p, d, q); [] = no SARIMA baseline
    sarima_seasonal_order: Orders3  # (P, D, Q) at period `season`
    sarima_log: bool  # fit SARIMA to the log of the series
    ets_seasonal: one_of("add", "mul", "none")  # Holt-Winters (additive trend) with an "add" or "mul" season, or none

    def check(self):
        require((not self.sarima_seasonal_order and self.ets_seasonal == "none") or self.season >= 2,
                "a seasonal SARIMA or ETS baseline needs season >= 2")


@dataclass(frozen=True)
class RecurrentModel(Checked):
    hidden_size: Count
    num_layers: Count
    dropout: Rate


@dataclass(frozen=True)
class Train(Checked):
    lr: Positive
    batch_size: Count
    epochs: Count
    patience: Count
    weight_decay: NonNegative
    lr_schedule: one_of("constant", "cosine")  # cosine: decays lr to 0 over `epochs`


@dataclass(frozen=True)
class SeededTrain(Train):
    seeds: Count  # models trained, with seeds seed, seed+1, ...: the checkpoint keeps the best on validation


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
class FileSetDownload(Checked):
    source: Source
    url: str  # base URL of the official files
    checksums: dict[str, str]  # file name -> "sha256:<hex>" or "md5:<hex>"


@dataclass(frozen=True)
class ImagePreprocess(Split):
    image_size: at_least(8)
    val_ratio: Ratio
    test_ratio: Ratio
    split_seed: int  # seeds the stratified splits


@dataclass(frozen=True)
class ClassifierBaseline(Checked):
    max_iter: Count  # iterations of the logistic-regression baseline


@dataclass(frozen=True)
class ImageModel(Checked):
    dropout: Rate


@dataclass(frozen=True)
class Augment(Checked):
    enabled: bool
    flip: bool
    crop_scale: Span  # (min, max) share of the image area kept by the random resized crop
    rotation: Degrees  # uniform in +-rotation
    jitter: Rate  # brightness/contrast/saturation factors in [1 - jitter, 1 + jitter]
    elastic: NonNegative  # pixels: largest displacement of the smooth random warp (0: off)
    elastic_sigma: Positive  # pixels: width of the Gaussian that smooths the warp


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
class TransferPreprocess(Checked):
    image_size: at_least(8)  # the target images are upsampled to the pretrained network's input size
    train_per_class: Count  # labelled target images per class: transfer pays off when labels are few
    val_per_class: Count
    split_seed: int  # seeds which images are the labelled ones


@dataclass(frozen=True)
class Finetune(Train):
    unfreeze_blocks: Count  # how many of the backbone's last blocks train in the fine-tuning phase


@dataclass(frozen=True)
class TransferModel(Checked):
    backbone: one_of("cnn", "vgg16", "resnet18")  # cnn: the digits CNN train@digits trains; others: ImageNet weights
    input_size: Pixels32  # vgg16/resnet18: pixels per side the backbone sees (batches are upsampled to it)
    hidden_size: Count  # vgg16/resnet18: units of the new head's hidden layer
    dropout: Rate  # vgg16/resnet18: dropout in the new head


@dataclass(frozen=True)
class TransferTask(Checked):
    download: Download
    preprocess: TransferPreprocess
    baseline: ClassifierBaseline
    model: TransferModel
    scratch: Train
    extract: Train
    finetune: Finetune
    kind: typing.ClassVar[str] = "images"
    models: typing.ClassVar[tuple] = ("scratch", "extract", "finetune")

    def check(self):
        require((self.download.source == "url") == (self.model.backbone != "cnn"),  # 1-channel digits, 3-channel CIFAR
                f"model.backbone {self.model.backbone} does not fit download.source {self.download.source}: "
                "use backbone cnn with source bundled (UCI digits), or vgg16/resnet18 with source url (CIFAR-10)")


@dataclass(frozen=True)
class TextPreprocess(Split):
    min_count: Count  # words seen fewer times in the training part become <unk>
    max_vocab: at_least(0)  # 0 = no cap
    sequences: one_of("prefix", "window")  # "prefix": every prefix of every line (the original); "window": max_len
    max_len: Count  # context length in words
    val_ratio: Ratio
    test_ratio: Ratio


@dataclass(frozen=True)
class LanguageModel(Checked):
    embedding_dim: Count
    hidden_size: Count
    num_layers: Count
    dropout: Rate
    tie_embeddings: bool  # the output layer reuses the input embedding's weights (needs embedding_dim = hidden_size)

    def check(self):
        require(not self.tie_embeddings or self.embedding_dim == self.hidden_size,
                f"tie_embeddings needs embedding_dim = hidden_size, got {self.embedding_dim} and {self.hidden_size}")


@dataclass(frozen=True)
class Generate(Checked):
    prompts: tuple[str, ...]  # seed phrases to continue
    n_words: Count
    temperature: Positive  # the sampled continuation's temperature (the greedy one is always written too)


@dataclass(frozen=True)
class TextBaseline(Checked):
    bigram_weights: Weights  # Jelinek-Mercer weights of the bigram against the unigram; validation picks
    kn_orders: Orders  # Kneser-Ney orders tried; validation picks one


@dataclass(frozen=True)
class Interpolate(Checked):
    weights: Weights  # network weights lambda tried in lambda P_network + (1 - lambda) P_KN


@dataclass(frozen=True)
class TextTask(Checked):
    download: Download
    preprocess: TextPreprocess
    baseline: TextBaseline
    model: LanguageModel
    train: SeededTrain
    interpolate: Interpolate
    generate: Generate
    kind: typing.ClassVar[str] = "text"
    models: typing.ClassVar[tuple] = ("rnn", "lstm", "gru")

    def check(self):
        require(max(self.baseline.kn_orders) - 1 <= self.preprocess.max_len,
                f"baseline.kn_orders: order {max(self.baseline.kn_orders)} needs contexts of "
                f"{max(self.baseline.kn_orders) - 1} words, longer than preprocess.max_len={self.preprocess.max_len}")


@dataclass(frozen=True)
class Run(Checked):
    kind: str  # the task's kind, as in `tasks` (dvc.yaml declares the train stage's code from it)
    models: Models  # the models train@<task> trains, one after another in one process


@dataclass(frozen=True)
class Params(Checked):
    device: one_of("auto", "cpu", "cuda", "mps")
    seed: int
    tasks: dict[str, str]  # task -> its kind
    runs: dict[str, Run]  # task -> what its train stage trains
    passengers: SeriesTask
    temperature: SeriesTask
    digits: DigitsTask
    flowers: FlowersTask
    transfer: TransferTask
    text: TextTask

    def check(self):
        most_seeds = max(self.passengers.train.seeds, self.temperature.train.seeds, self.text.train.seeds)  # seeded tasks
        require(0 <= self.seed and self.seed + most_seeds - 1 < 2**32,  # NumPy's seed range, with seed + k for k seeds
                f"seed must be in [0, 2**32 - {most_seeds}] (a task trains {most_seeds} seeds from it), got {self.seed}")
        for name, kind in self.tasks.items():
            require(name in TASK_NAMES, f"tasks: unknown task {name!r} (known: {', '.join(TASK_NAMES)})")
            require(kind == getattr(self, name).kind, f"tasks.{name} must be {getattr(self, name).kind}, the kind "
                                                       f"of its data (it names the code its stages run), got {kind!r}")
        for name, run in self.runs.items():
            require(name in TASK_NAMES, f"runs: unknown task {name!r} (known: {', '.join(TASK_NAMES)})")
            require(name != "transfer", "runs.transfer: transfer trains in its own scratch/extract/finetune stages")
            require(run.kind == getattr(self, name).kind, f"runs.{name}.kind must be {getattr(self, name).kind}, "
                                                           f"as in tasks, got {run.kind!r}")
            known = getattr(self, name).models
            for model in run.models:
                require(model in known, f"runs.{name}.models: unknown model {model!r} for {name} (known: {', '.join(known)})")

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


def _task_first(key: str) -> str | None:
    """An unknown top-level key that is a task's section (download, preprocess, train, ...) is a task-first slip."""
    if key in {f.name for name in TASK_NAMES for f in fields(typing.get_type_hints(Params)[name])}:
        return (f"keys are task-first, <task>.{key}.<key> (e.g. passengers.{key}, digits.{key}); "
                f"tasks: {', '.join(TASK_NAMES)}")


def load_params(path: Path = ROOT / "params.yaml") -> Params:
    return loader.load(Path(path), Params, _task_first)
