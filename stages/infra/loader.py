"""A YAML file into frozen dataclasses, strictly: an unknown, missing or mistyped key, a duplicate key or an empty
file is an error naming the key (or the line), and a value a dataclass's __post_init__ refuses (ValueError) becomes
`params.yaml: <key path> must ...`. stages/infra/config.py declares the dataclasses."""
import re
import typing
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Annotated

import yaml

from stages.infra.errors import PipelineError


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class Rule:
    """A field's rule, declared in its annotation (`lr: Positive`): ok(value), or ValueError("<field> must <text>")."""
    ok: typing.Callable
    text: str  # "be > 0"

    def __call__(self, name: str, value) -> None:
        require(self.ok(value), f"{name} must {self.text}, got {list(value) if isinstance(value, tuple) else value!r}")


def at_least(low: int):
    return Annotated[int, Rule(lambda v: v >= low, f"be >= {low}")]


def one_of(*options: str):
    return Annotated[str, Rule(lambda v: v in options, f"be {', '.join(options[:-1])} or {options[-1]}")]


Count = at_least(1)
NonNegative = Annotated[float, Rule(lambda v: v >= 0, "be >= 0")]
Positive = Annotated[float, Rule(lambda v: v > 0, "be > 0")]
Ratio = Annotated[float, Rule(lambda v: 0 < v < 1, "be in (0, 1)")]
Rate = Annotated[float, Rule(lambda v: 0 <= v < 1, "be in [0, 1)")]  # a dropout, a jitter
Weights = Annotated[tuple[float, ...], Rule(lambda v: len(v) > 0 and all(0 <= w <= 1 for w in v),
                                            "be a non-empty list of weights in [0, 1]")]


class Checked:
    """A dataclass whose fields' annotations carry their rules: each is checked on creation, in field order, then
    check() holds what relates two fields (raising ValueError through require)."""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self), include_extras=True)
        for field in fields(self):
            for rule in getattr(hints[field.name], "__metadata__", ()):
                rule(field.name, getattr(self, field.name))
        self.check()

    def check(self) -> None:
        pass


def load(path: Path, cls, hint=lambda key: None):
    """`cls` built from the YAML file at `path`; hint(key) explains an unknown top-level key, or returns None."""
    return _build(cls, read(path), "", hint)


def build(kind, raw, where: str, hint=lambda key: None):
    """`raw` (a part of the file, at key path `where`) checked against the annotation `kind`, dataclasses built."""
    return _convert(raw, kind, where, hint)


def read(path: Path) -> dict:
    """The YAML file at `path` as a mapping; an unreadable, invalid or empty file is an error naming it."""
    try:
        raw = yaml.load(Path(path).read_text(), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise PipelineError(f"{path}: not valid YAML ({_first_lines(err)})") from None
    if raw is None:
        raise PipelineError(f"{path}: the file is empty; it holds every param of the pipeline (git checkout -- {path.name})")
    if not isinstance(raw, dict):
        raise PipelineError(f"params.yaml: the file must be a mapping, got {raw!r}")
    return raw


def _convert(value, kind, where: str, hint):
    """Check `value` against the annotation `kind`, recursing into dataclasses, tuples and dicts."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if is_dataclass(kind):
        return _build(kind, value, where, hint)
    if origin is tuple:
        if not isinstance(value, list):
            raise PipelineError(f"params.yaml: {where} must be a list, got {value!r}")
        return tuple(_convert(v, args[0], f"{where}[{i}]", hint) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise PipelineError(f"params.yaml: {where} must be a mapping, got {value!r}")
        return {k: _convert(v, args[1], f"{where}.{k}", hint) for k, v in value.items()}
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str) and FLOAT.fullmatch(value):
        return float(value)  # 1e-3: YAML 1.1 (PyYAML) reads it as a string, YAML 1.2 (DVC) as the number meant
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PipelineError(f"params.yaml: {where} must be {kind.__name__}, got {value!r}")
    return value


def _build(cls, raw, where: str, hint=lambda key: None):
    if not isinstance(raw, dict):
        raise PipelineError(f"params.yaml: {where or 'the file'} must be a mapping, got {raw!r}")
    prefix = f"{where}." if where else ""
    names = [f.name for f in fields(cls)]
    for key in raw:
        if key not in names and not where and hint(key):  # e.g. `dvc exp run -S +train.lr=0.01`
            raise PipelineError(f"params.yaml: unknown top-level key {key}: {hint(key)}")
        if key not in names:
            raise PipelineError(f"params.yaml: unknown key {prefix}{key}")
    for name in names:
        if name not in raw:
            raise PipelineError(f"params.yaml: missing key {prefix}{name}")
    hints = typing.get_type_hints(cls)
    values = {name: _convert(raw[name], hints[name], prefix + name, hint) for name in names}
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
