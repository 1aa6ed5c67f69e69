"""params.yaml as frozen dataclasses, loaded once; an unknown, missing or impossible value is an error.

params.yaml is task-first (`passengers.train.lr`), so each DVC stage can declare just its own task's keys. A field's
annotation carries its rule (`lr: Positive`, checked by stages/infra/loader.py), check() what relates fields; a refusal
names the full key (`params.yaml: passengers.train.lr must be > 0, got -1`).
"""
import typing
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Annotated

from stages.infra import loader
from stages.infra.errors import PipelineError
from stages.infra.loader import Checked, Count, NonNegative, Positive, Rate, Ratio, Rule, Weights, at_least, one_of, require

ROOT = Path(__file__).resolve().parents[2]
Orders = Annotated[tuple[int, ...], Rule(lambda v: len(v) > 0 and min(v) >= 2, "be a non-empty list of orders >= 2")]
Orders3 = Annotated[tuple[int, ...], Rule(lambda v: len(v) in (0, 3), "be three orders or []")]
Span = Annotated[tuple[float, ...], Rule(lambda v: len(v) == 2 and 0 < v[0] <= v[1] <= 1, "be [min, max], 0 < min <= max <= 1")]
Degrees = Annotated[float, Rule(lambda v: 0 <= v <= 180, "be in [0, 180] degrees (images turn by +-rotation)")]
Pixels32 = Annotated[int, Rule(lambda v: v >= 32 and v % 32 == 0, "be a multiple of 32 (VGG16 halves the image 5 times)")]
Models = Annotated[tuple[str, ...], Rule(lambda v: len(v) == len(set(v)) > 0, "list each model once (drop an entry with none)")]
KINDS = ("series", "images", "text")  # the code a task's stages run: stages/kinds/<kind>/
# steps per season, or auto: from preprocess.frequency (SEASONS)
Season = Annotated[object, Rule(lambda v: v == "auto" or (type(v) is int and v >= 0), "be auto or a whole number >= 0")]
# The seasonal baselines' season of a frequency (pandas offset aliases, without a multiple): a year of months or
# quarters, a week of days, a day of hours, a year of weeks.
SEASONS = {"MS": 12, "ME": 12, "M": 12, "QS": 4, "QE": 4, "Q": 4, "D": 7, "h": 24, "H": 24, "W": 52}


@dataclass(frozen=True)
class Sources(Checked):
    """Where each task's raw data (data/raw/<task>/) comes from; each task is in exactly one of the two."""
    download: dict[str, str]  # download@<task>: bundled (a data set that ships in a package, offline) or url
    path: dict[str, str]  # copy@<task>: a file or folder of this repository (tracked by `dvc add`)

    def check(self):
        for name, source in self.download.items():
            require(source in ("bundled", "url"), f"download.{name} must be bundled or url, got {source!r}")
        for name, path in self.path.items():
            require(path and not Path(path).is_absolute() and ".." not in Path(path).parts,
                    f"path.{name} must be a path inside the repository, relative to it, got {path!r}")


@dataclass(frozen=True)
class Download(Checked):
    bundled: str  # the data set that ships in a package (stages/core/sources.py), or none
    url: str  # the online file, used when sources.download.<task> is url
    checksum: str  # "sha256:<hex>" or "md5:<hex>"; none: print the download's sha256, to pin here


class Split(Checked):
    """A preprocess section's val_ratio and test_ratio (its own fields, in params.yaml's order) leave a train part."""
    def check(self):
        require(self.val_ratio + self.test_ratio < 1, "val_ratio + test_ratio must be < 1")


@dataclass(frozen=True)
class SeriesPreprocess(Split):
    time: str  # the CSV's time column
    value: str  # the CSV's value column: the series forecast
    time_format: str  # strftime codes of the time column, or auto: pandas reads it
    frequency: str  # the steps' frequency as a pandas alias (MS monthly, QS quarterly, D daily, h hourly), or none
    resample: bool  # true: average into steps of `frequency`, empty steps interpolated; false: the rows as they are
    unit: str  # of the values, on the figures' axes
    seq_length: Count
    horizon: Count
    val_ratio: Ratio
    test_ratio: Ratio
    scaler: one_of("minmax", "standard")
    log: bool  # model the log of the series: a season that grows with the level becomes additive
    differences: tuple[int, ...]  # lags differenced away before windowing, in order (12: seasonal, 1: first)

    def check(self):
        require(self.frequency != "none" or not self.resample, "resample needs a frequency to resample to, got none")
        require(all(lag >= self.horizon for lag in self.differences),
                f"differences must all be >= horizon ({self.horizon}): a forecast may use only values it has seen, "
                f"got {list(self.differences)}")
        super().check()


@dataclass(frozen=True)
class SeriesBaseline(Checked):
    season: Season  # steps per season for the seasonal baselines; 0 = none; auto: from preprocess.frequency
    ridge_alpha: NonNegative  # L2 penalty of the linear autoregression on the models' own windows
    sarima_order: Orders3  # (p, d, q); [] = no SARIMA baseline
    sarima_seasonal_order: Orders3  # (P, D, Q) at period `season`
    sarima_log: bool  # fit SARIMA to the log of the series
    ets_seasonal: one_of("add", "mul", "none")  # Holt-Winters (additive trend) with an "add" or "mul" season, or none

    def check(self):
        require(self.season == "auto" or (not self.sarima_seasonal_order and self.ets_seasonal == "none")
                or self.season >= 2, "a seasonal SARIMA or ETS baseline needs season >= 2")


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
class SeriesTask(Checked):
    models: Models  # trained by train@<task>, one after another in one process
    download: object  # Download, or None for a path source (sources.path)
    preprocess: SeriesPreprocess
    baseline: SeriesBaseline
    model: RecurrentModel
    train: SeriesTrain
    kind: typing.ClassVar[str] = "series"
    known_models: typing.ClassVar[tuple] = ("rnn", "lstm", "gru", "hybrid_rnn", "hybrid_lstm", "hybrid_gru")

    def check(self):
        if self.baseline.season == "auto":  # settled here, once: every stage reads the number
            frequency = self.preprocess.frequency.removeprefix("1")
            seasonal = bool(self.baseline.sarima_seasonal_order) or self.baseline.ets_seasonal != "none"
            require(frequency in SEASONS or not seasonal,
                    f"baseline.season auto: preprocess.frequency {self.preprocess.frequency!r} has no standard season "
                    f"(known: {', '.join(sorted(SEASONS))}); give season as a number")
            object.__setattr__(self, "baseline", replace(self.baseline, season=SEASONS.get(frequency, 0)))


@dataclass(frozen=True)
class FileSetDownload(Checked):
    bundled: str  # as in Download
    url: str  # base URL of the official files
    checksums: dict[str, str]  # file name -> "sha256:<hex>" or "md5:<hex>"


@dataclass(frozen=True)
class ImagePreprocess(Split):
    format: one_of("folder", "mnist", "cifar10", "uci_digits")  # how the raw data is stored (stages/kinds/images/prepare.py)
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
class ImageTask(Checked):
    models: Models  # trained by train@<task>, one after another in one process
    download: object  # Download or FileSetDownload (a set of official files, MNIST's four), or None for a path source
    preprocess: ImagePreprocess
    baseline: ClassifierBaseline
    model: ImageModel
    train: ImageTrain
    kind: typing.ClassVar[str] = "images"
    known_models: typing.ClassVar[tuple] = ("cnn", "cnn2", "simple_cnn", "flower_cnn", "small_cnn")


@dataclass(frozen=True)
class TransferPreprocess(Checked):
    format: one_of("folder", "mnist", "cifar10", "uci_digits")  # as in an images task
    image_size: at_least(8)  # the target images are upsampled to the pretrained network's input size
    train_per_class: Count  # labelled target images per class: transfer pays off when labels are few
    val_per_class: Count
    split_seed: int  # seeds which images are the labelled ones


@dataclass(frozen=True)
class Finetune(Train):
    unfreeze_blocks: Count  # how many of the backbone's last blocks train in the fine-tuning phase


@dataclass(frozen=True)
class TransferModel(Checked):
    backbone: one_of("cnn", "vgg16", "resnet18")  # cnn: the CNN its pretrained task trains (transfer_tasks); others: ImageNet
    input_size: Pixels32  # vgg16/resnet18: pixels per side the backbone sees (batches are upsampled to it)
    hidden_size: Count  # vgg16/resnet18: units of the new head's hidden layer
    dropout: Rate  # vgg16/resnet18: dropout in the new head


@dataclass(frozen=True)
class TransferTask(Checked):
    """An images task that starts from a trained network, in its own scratch, extract and finetune stages."""
    models: Models  # its three phases, in that order
    download: object  # as in ImageTask
    preprocess: TransferPreprocess
    baseline: ClassifierBaseline
    model: TransferModel
    scratch: Train
    extract: Train
    finetune: Finetune
    kind: typing.ClassVar[str] = "images"
    known_models: typing.ClassVar[tuple] = ("scratch", "extract", "finetune")

    def check(self):
        require(self.models == self.known_models, f"models must be {list(self.known_models)}: the transfer phases, "
                                                  f"each its own stage, got {list(self.models)}")


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
    models: Models  # trained by train@<task>, one after another in one process
    download: object  # Download, or None for a path source (sources.path)
    preprocess: TextPreprocess
    baseline: TextBaseline
    model: LanguageModel
    train: SeededTrain
    interpolate: Interpolate
    generate: Generate
    kind: typing.ClassVar[str] = "text"
    known_models: typing.ClassVar[tuple] = ("rnn", "lstm", "gru")

    def check(self):
        require(max(self.baseline.kn_orders) - 1 <= self.preprocess.max_len,
                f"baseline.kn_orders: order {max(self.baseline.kn_orders)} needs contexts of "
                f"{max(self.baseline.kn_orders) - 1} words, longer than preprocess.max_len={self.preprocess.max_len}")


TaskSection = SeriesTask | ImageTask | TransferTask | TextTask
# the keys that are not a task's section
TOP_LEVEL = ("device", "seed", "scale", "tasks", "runs", "text_tasks", "transfer_tasks", "sources")


@dataclass(frozen=True)
class Scale(Checked):
    """How many processes train one model, data-parallel (stages/infra/launch.py): nproc_per_node on each of nnodes
    machines. 1 x 1 is one process and no process group."""
    nproc_per_node: Count
    nnodes: Count

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


@dataclass(frozen=True)
class Params(Checked):
    device: one_of("auto", "cpu", "cuda", "mps")
    seed: int
    scale: Scale
    tasks: dict[str, str]  # every task -> its kind (KINDS, checked by section_class); its section, under its name
    runs: dict[str, str]  # the tasks train@<task> trains, kind as in tasks (a transfer task trains in its own stages)
    text_tasks: tuple[str, ...]  # the text tasks of runs, for interpolate@ and generate@ (dvc.yaml)
    transfer_tasks: dict[str, str]  # transfer task -> the images task whose cnn it starts from (its stages' foreach)
    sources: Sources
    sections: dict[str, object]  # task -> its section (TaskSection; not a key of params.yaml: the sections themselves)

    def check(self):
        for name, kind in self.runs.items():
            require(name in self.tasks, f"runs.{name}: not a task (add it to tasks, with its kind)")
            require(kind == self.tasks[name], f"runs.{name} must be {self.tasks[name]}, as in tasks, got {kind!r}")
        for name, section in self.sections.items():
            transfer = isinstance(section, TransferTask)
            require(transfer or name in self.runs, f"runs: {name} is missing (train@{name} trains its models)")
            require(not transfer or name not in self.runs, f"runs.{name}: a transfer task trains in its own "
                                                           "scratch/extract/finetune stages; remove it from runs")
            for model in section.models:
                require(model in section.known_models, f"{name}.models: unknown model {model!r} for a {section.kind} "
                                                       f"task (known: {', '.join(section.known_models)})")
            downloaded = name in self.sources.download
            require(downloaded != (name in self.sources.path),
                    f"sources: {name} must be in exactly one of sources.download and sources.path")
            require(downloaded == (section.download is not None),
                    f"{name}.download: " + ("missing (sources.download names the task)" if downloaded else
                                            "a path source downloads nothing; remove this section"))
            require(transfer == (name in self.transfer_tasks),
                    f"transfer_tasks: {name} " + ("is missing (a transfer task: its stages run for it)" if transfer else
                                                  "is not a transfer task (one with scratch, extract and finetune)"))
            if transfer:
                pretrained = self.transfer_tasks[name]
                section_of = self.sections.get(pretrained)
                require(pretrained in self.runs and isinstance(section_of, ImageTask) and "cnn" in section_of.models,
                        f"transfer_tasks.{name}: {pretrained!r} must be an images task that trains the cnn model "
                        f"(extract starts from its checkpoint)")
        texts = [name for name, kind in self.runs.items() if kind == "text"]
        require(sorted(self.text_tasks) == sorted(texts), f"text_tasks must list the text tasks of runs, {texts}, got "
                                                          f"{list(self.text_tasks)} (interpolate@ and generate@ run for each)")
        for key in self.sources.download.keys() | self.sources.path.keys():
            require(key in self.tasks, f"sources: {key} is not a task (add it to tasks, with its kind)")
        seeds = [s.train.seeds for s in self.sections.values() if isinstance(getattr(s, "train", None), SeededTrain)]
        most_seeds = max(seeds, default=1)
        require(0 <= self.seed and self.seed + most_seeds - 1 < 2**32,  # NumPy's seed range, with seed + k for k seeds
                f"seed must be in [0, 2**32 - {most_seeds}] (a task trains {most_seeds} seeds from it), got {self.seed}")

    def trained_models(self, task: str) -> list[str]:
        """The models of a task: its section's models (a transfer task's three phases)."""
        return list(self.task(task).models)

    def task(self, name: str) -> TaskSection:
        if name not in self.sections:
            raise PipelineError(f"unknown task {name!r} (tasks: {', '.join(self.sections)})")
        return self.sections[name]


def section_class(name: str, kind: str, raw: dict):
    """The dataclass of a task's section: by its kind, and for images whether it has the transfer phases."""
    if kind == "images":
        return TransferTask if "scratch" in raw else ImageTask
    if kind not in KINDS:
        raise PipelineError(f"params.yaml: tasks.{name} must be {', '.join(KINDS[:-1])} or {KINDS[-1]} (the code its "
                            f"stages run: stages/kinds/<kind>/), got {kind!r}")
    return {"series": SeriesTask, "text": TextTask}[kind]


def _section(name: str, kind: str, raw, downloaded: bool, hint):
    """One task's section; its download subsection is a Download, a FileSetDownload (a `checksums` map) or None."""
    if not isinstance(raw, dict):
        raise PipelineError(f"params.yaml: {name} must be a mapping (the task's section), got {raw!r}")
    body = dict(raw)
    download = body.pop("download", None)
    if download is not None:
        kind_of = FileSetDownload if isinstance(download, dict) and "checksums" in download else Download
        download = loader.build(kind_of, download, f"{name}.download", hint)
    return loader.build(section_class(name, kind, raw), body | {"download": download}, name, hint)


def _task_first(key: str) -> str | None:
    """An unknown top-level key that is a task's section (download, preprocess, train, ...) is a task-first slip."""
    sections = {f.name for cls in (SeriesTask, ImageTask, TransferTask, TextTask) for f in fields(cls)}
    if key in sections:
        return f"keys are task-first, <task>.{key}.<key> (-S <task>.{key}.<key>=<value>, the task as in tasks)"


def load_params(path: Path = ROOT / "params.yaml") -> Params:
    raw = loader.read(Path(path))
    top = {key: raw[key] for key in TOP_LEVEL if key in raw}
    for key in TOP_LEVEL:
        if key not in raw:
            raise PipelineError(f"params.yaml: missing key {key}")
    tasks = loader.build(dict[str, str], top["tasks"], "tasks", _task_first)
    sources = loader.build(Sources, top["sources"], "sources", _task_first)
    for key in raw:
        if key not in TOP_LEVEL and key not in tasks:
            hint = _task_first(key)
            raise PipelineError(f"params.yaml: unknown top-level key {key}: " + (hint or
                                f"not a task (tasks: {', '.join(tasks)}); add it to tasks to run it"))
    sections = {}
    for name, kind in tasks.items():
        if name in TOP_LEVEL:
            raise PipelineError(f"params.yaml: tasks.{name}: a task cannot be named {name} (a top-level key)")
        if name not in raw:
            raise PipelineError(f"params.yaml: tasks.{name}: its section `{name}:` is missing")
        sections[name] = _section(name, kind, raw[name], name in sources.download, _task_first)
    return loader.build(Params, top | {"sections": sections}, "", _task_first)
