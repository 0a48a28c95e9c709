"""Recipes: typed, frozen dataclasses built from YAML (a safe loader that refuses duplicate keys), with
``--set a.b=v`` overrides.

A recipe never names code to import: every choice (dataset, architecture, objective, perturbation) is a
string looked up in a registry. Errors name the dotted key and what was expected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from distill import UserError

# ---------------------------------------------------------------------------------------------------
# allowed ranges: a field's range is part of its dataclass (``ranged``), checked by :func:`build` as the dataclass
# is built from plain data, so a value out of range stops before any data is read, with the dotted key, instead of
# a traceback (or a silently odd run) deep inside training. Recipe sections and the params dataclasses of
# registered names (objectives, perturbations, student options) declare theirs the same way.

Rule = tuple[Callable[[Any], bool], str]  # (accepts the value, what was expected)
_RANGE = "distill.range"  # the field-metadata key of a ranged field's Rule


def ints(lo: int, hi: int | None = None) -> Rule:
    text = f"an integer >= {lo}" if hi is None else f"an integer in {lo}..{hi}"
    return (lambda v: v >= lo and (hi is None or v <= hi)), text


def floats(lo: float, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False) -> Rule:
    def ok(v: float) -> bool:
        return (
            math.isfinite(v) and (v > lo if lo_open else v >= lo) and (hi is None or (v < hi if hi_open else v <= hi))
        )

    if hi is None:
        text = f"a finite number {'>' if lo_open else '>='} {lo}"
    else:
        text = f"a number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    return ok, text


FRACTION = floats(0.0, 1.0, hi_open=True)
POSITIVE = floats(0.0, lo_open=True)
NON_NEGATIVE = floats(0.0)


def checks(rule: Rule) -> dict[str, Rule]:
    """The field metadata of a ranged field: ``field(default_factory=..., metadata=checks(ints(1, 5)))``."""
    return {_RANGE: rule}


def ranged(rule: Rule, default: Any) -> Any:
    """A dataclass field with an immutable ``default`` whose value (each element of a list; None passes)
    :func:`build` checks against ``rule``."""
    return field(default=default, metadata=checks(rule))


def check_range(f: dataclasses.Field, value: Any, key: str) -> None:
    """Raise a UserError naming ``key`` when ``value`` (or an element of a list) is outside field ``f``'s range."""
    rule = f.metadata.get(_RANGE)
    if rule is None or value is None:
        return
    ok, text = rule
    for i, v in enumerate(value) if isinstance(value, list) else [(None, value)]:
        if not ok(v):
            where = key if i is None else f"{key}[{i}]"
            raise UserError(f"recipe key '{where}': expected {text}, got {v!r}")


@dataclass(frozen=True)
class DataCfg:
    name: str = "digits"
    root: str | None = None  # directory or archive holding the dataset (not needed for digits)
    split_seed: int = 0  # seed of the fixed train / val / test split
    val_fraction: float = ranged(FRACTION, 0.1)
    test_fraction: float = ranged(FRACTION, 0.2)  # used only by datasets that ship without a test split (digits, mnist)
    augment: bool = True
    crop_padding: int = ranged(ints(0), 0)  # random crop with this zero padding; 0 disables
    flip: bool = False  # random horizontal flip
    limit_train: int | None = ranged(ints(1), None)  # a seeded, class-stratified subset of N training images
    holdout_classes: list[int] = field(default_factory=list)  # removed from training; an OOD set
    outlier: str | None = None  # outlier-exposure dataset name (SDDE_OOD); same root rules as `name`
    outlier_root: str | None = None
    # where decoded uint8 tensors are cached: this, else $DISTILL_CACHE, else ~/.cache/distill (distill/data/images.py)
    cache_dir: str | None = None
    # [H, W] (or one int for a square): each image is resized (its shorter side) and centre-cropped to it once, at
    # decode time, so a folder of mixed sizes loads; part of "the same data" (distill/data/identity.py)
    image_size: int | list[int] | None = None
    # an image folder or archive (labels, if any, unused): a student's extra inputs, labelled by the teacher
    # (objectives/student.py); teachers and single networks ignore it
    transfer: str | None = None

    def __post_init__(self) -> None:
        size = self.image_size
        if size is not None and not (
            (isinstance(size, int) and size >= 1) or (isinstance(size, list) and len(size) == 2 and min(size) >= 1)
        ):
            raise UserError(f"recipe key 'data.image_size': expected a positive int or [H, W], got {size!r}")

    def image_hw(self) -> tuple[int, int] | None:
        """``image_size`` as (H, W), or None when images keep their size."""
        size = self.image_size
        return None if size is None else (size, size) if isinstance(size, int) else (size[0], size[1])


@dataclass(frozen=True)
class OptimCfg:
    name: Literal["sgd", "adam"] = "sgd"
    lr: float = ranged(POSITIVE, 0.1)
    momentum: float = ranged(FRACTION, 0.9)
    nesterov: bool = True
    weight_decay: float = ranged(NON_NEGATIVE, 5e-4)


@dataclass(frozen=True)
class ScheduleCfg:
    name: Literal["cosine", "constant", "step", "warmup_linear"] = "cosine"
    eta_min: float = ranged(NON_NEGATIVE, 1e-6)  # cosine floor
    warmup_epochs: float = ranged(NON_NEGATIVE, 0.0)  # linear warm-up from 0 (cosine and warmup_linear)
    # step: fractions of training
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75], metadata=checks(floats(0.0, 1.0)))
    gamma: float = ranged(POSITIVE, 0.1)  # step: decay factor
    final_lr_fraction: float = ranged(floats(0.0, 1.0), 0.0)  # warmup_linear: lr at the end as a fraction of the peak


@dataclass(frozen=True)
class TrainCfg:
    epochs: int = ranged(ints(1), 10)
    batch_size: int = ranged(ints(1), 64)  # per member, per process
    optim: OptimCfg = OptimCfg()
    schedule: ScheduleCfg = ScheduleCfg()
    grad_accum: int = ranged(ints(1), 1)
    select: Literal["best_val_nll", "best_val_acc", "last"] = "best_val_nll"
    # The share of the epochs, counted back from the last, that are validated and so can be selected; the last
    # epoch always is. Validation costs a forward pass over the validation split per member each epoch (with its
    # checkpoint, 9 of the CIFAR-10 CPU pipeline's 61 minutes); under a decaying schedule a student's early epochs
    # were never its best there. Keep 1.0 where a network can overfit early (a single network on little data).
    validate_last: float = ranged(floats(0.0, 1.0, lo_open=True), 1.0)

    def validates(self, epoch: int) -> bool:
        """Whether 0-based ``epoch`` is validated: one of the last ``ceil(validate_last * epochs)``."""
        # the tolerance: 0.3 * 10 is 3.0000000000000004, which must validate 3 epochs, not 4
        return epoch >= self.epochs - max(1, math.ceil(self.validate_last * self.epochs - 1e-9))


@dataclass(frozen=True)
class TeacherCfg:
    arch: str | list[str] = "small_cnn"  # one name for all members, or one per member (heterogeneous)
    members: int = ranged(ints(1), 4)
    objective: dict[str, Any] = field(default_factory=lambda: {"name": "de"})
    train: TrainCfg = TrainCfg()
    # Fort et al. analyses: each epoch, members' softmax outputs on a fixed validation subset (and weights)
    record_trajectory: bool = False
    record_weights: bool = False
    trajectory_images: int = ranged(ints(1), 500)


@dataclass(frozen=True)
class PerturbCfg:
    name: str = "none"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudentCfg:
    name: str = "student"
    arch: str = "small_cnn"
    # a registered student kind (distill/students/<kind>.py, or a plugin's); checked with the recipe (distill.resolve)
    kind: str = "single"
    alpha: float = ranged(floats(0.0, 1.0), 0.9)
    temperature: float = ranged(POSITIVE, 4.0)
    perturb: PerturbCfg = PerturbCfg()
    train: TrainCfg = TrainCfg()
    options: dict[str, Any] = field(default_factory=dict)  # the kind's own options, checked by the kind


@dataclass(frozen=True)
class ControlCfg:
    """A control trained beside the students to isolate what the ensemble contributes (resolved into what it trains
    by ``distill/train.py``'s ``control_plans``); each copies the student ``controls_like`` names (default: the first
    student): its architecture, train section (schedule, epochs, validate_last, selection) and data.

    ``single_long``: the ``single`` section's network and objective on that student's train section;
    ``label_smoothing``: the student's architecture on labels smoothed by ``smoothing`` (default 0.1), no teacher;
    ``self_kd``: the student (alpha, temperature, perturbation) distilled from the single network, not the ensemble.
    """

    name: Literal["single_long", "label_smoothing", "self_kd"]
    smoothing: float | None = ranged(FRACTION, None)  # label_smoothing only; None: 0.1


@dataclass(frozen=True)
class OODSetCfg:
    name: str  # a dataset name (e.g. notmnist, cifar10), or "heldout" for data.holdout_classes
    root: str | None = None
    group: Literal["near", "far"] = "far"


@dataclass(frozen=True)
class CostCfg:
    """The report's inference-cost table (distill/report/cost.py): CPU timings, medians after warm-up."""

    enabled: bool = True
    reps: int = 20  # timed calls per model and batch size
    warmup: int = 3  # untimed calls first
    batches: list[int] = field(default_factory=lambda: [1, 256])  # latency at the first, throughput at the last
    onnx: bool = True  # also export each model to ONNX and time it under ONNX Runtime


@dataclass(frozen=True)
class EvalCfg:
    ood: list[OODSetCfg] = field(default_factory=list)
    ood_scores: list[str] = field(
        default_factory=lambda: ["msp", "max_logit", "neg_entropy", "neg_mi", "mal", "min_member_max_logit"]
    )
    corruptions: list[str] | None = None  # None: CIFAR-10-C's 15 (the 4 extras only by name); [] disables
    corruption_limit: int = ranged(ints(1), 1000)  # test images used for the corruption sweep
    corruption_seed: int = 0  # image i of the sweep draws its noise from (corruption_seed, i), whatever the batches
    frost_images: str | None = None  # dir with CIFAR-10-C's frost1.png .. frost5.jpg: frost as the original does
    # the released CIFAR-10-C folder (<corruption>.npy, labels.npy): sweep its images (corruption_limit of each
    # severity, drawn class-stratified with subset_seed) instead of corrupting test images here; CIFAR-10 only
    cifar10c: str | None = None
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5], metadata=checks(ints(1, 5)))
    cam_images: int = ranged(ints(0), 8)  # test images in the CAM grid figure
    diversity_images: int = ranged(ints(1), 500)  # test images for the saliency / attribution / CKA diversity measures
    # seed of every test subset above (corruption_limit, diversity_images, cam_images): each is drawn class-
    # stratified with it (distill/data/subsets.py), never the first N of a class-sorted split
    subset_seed: int = ranged(ints(0), 0)
    batch_size: int = ranged(ints(1), 512)
    cost: CostCfg = CostCfg()
    # The OOD column, its gain share and the verdict read ONE score per model, declared before evaluation by the
    # model's kind (distill/students/readout.py: msp for one network, the members' mutual information for several);
    # this overrides it per kind: {single|ensemble|batchensemble|hydra|dirichlet: score}. Never chosen on test.
    ood_score: dict[str, str] = field(default_factory=dict)
    # paired bootstrap resamples of the test images for the report's intervals (0: off)
    bootstrap: int = ranged(ints(0), 1000)
    bootstrap_seed: int = 0
    confidence: float = ranged(floats(0.5, 1.0, lo_open=True, hi_open=True), 0.95)  # of every interval the report gives


@dataclass(frozen=True)
class RunCfg:
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    log_every: int = ranged(ints(1), 20)  # steps between TensorBoard scalars
    progress: bool = True
    cpu: bool = False  # force the CPU even when a GPU is present
    # channels-last conv weights for the trained model and a student's frozen teacher: tensor cores under bf16 on a
    # GPU; 1.4-1.6x on the CPU for 32x32 nets (docs/performance.md), slower for digits-sized 8x8 inputs
    channels_last: bool = False
    compile: bool = False  # GPU: torch.compile the members where the objective allows (the objective's compile_when)
    # how an ensemble runs its members (distill/models/ensemble.py): a Python loop, one torch.func.vmap over
    # stacked weights (members of one architecture only), or auto (the loop until a GPU measurement says otherwise)
    member_mode: Literal["loop", "vmap", "auto"] = "auto"
    # under several processes (accelerate launch / torchrun): "data" replicates the whole ensemble on every process
    # (DDP over shards of each batch); "members" gives each process a contiguous share of the members, each trained
    # on the data order it has in one process, at most one process per member (distill/parallel.py, docs/scale.md);
    # a student stage spreads its frozen teacher's members and trains the student as "data" (distill/spread_teacher.py)
    parallel: Literal["data", "members"] = "data"


@dataclass(frozen=True)
class Recipe:
    seed: int = 0
    data: DataCfg = DataCfg()
    teacher: TeacherCfg | None = None
    single: TeacherCfg | None = None  # single-model baseline: a one-member DE
    student: StudentCfg | None = None
    students: list[StudentCfg] = field(default_factory=list)
    controls: list[ControlCfg] = field(default_factory=list)  # trained into OUT/controls/<name> by `distill run`
    controls_like: str | None = None  # the student the controls copy (a 'single' student); None: the first
    evaluate: EvalCfg = EvalCfg()
    run: RunCfg = RunCfg()


# ---------------------------------------------------------------------------------------------------
# building dataclasses from plain data


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


_YAML_BOOL_WORDS = {False: ("no", "off", "n", "false"), True: ("yes", "on", "y", "true")}


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        return _convert_union(value, tp, key)
    if origin is Literal:
        return _convert_literal(value, tp, key)
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"recipe key '{key}': expected {_type_name(tp)}, got {value!r}")
        (inner,) = typing.get_args(tp)
        return [_convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"recipe key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    return _convert_scalar(value, tp, key)


def _convert_union(value: Any, tp: Any, key: str) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    if len(options) == 1:  # Optional[X]: X's own error names the deepest key
        return _convert(value, options[0], key)
    for arg in options:
        try:
            return _convert(value, arg, key)
        except UserError:
            continue
    raise UserError(f"recipe key '{key}': expected {_type_name(tp)}, got {value!r}")


def _convert_literal(value: Any, tp: Any, key: str) -> Any:
    if isinstance(value, bool):
        # YAML 1.1 (PyYAML) reads a bare no / off / yes / on as a boolean, so `mixed_precision: no` in a recipe
        # or `--set run.mixed_precision=no` arrives as False: give back the one word of the Literal it was
        words = [a for a in typing.get_args(tp) if isinstance(a, str) and a.lower() in _YAML_BOOL_WORDS[value]]
        if len(words) == 1:
            return words[0]
    elif value in typing.get_args(tp):
        return value
    raise UserError(f"recipe key '{key}': expected one of {_type_name(tp)}, got {value!r}")


def _convert_scalar(value: Any, tp: Any, key: str) -> Any:
    """bool, int, float (an int is widened) or str, as given: YAML has typed them already (a bool is no int)."""
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, str):
        return value
    hint = ""
    if tp is float and isinstance(value, str):
        with contextlib.suppress(ValueError):
            float(value)  # YAML 1.1 reads 1e-3 and 1.0e3 (no dot, no exponent sign) as text
            hint = f" (YAML reads {value} as text; write {float(value):.1e}: a dot and a signed exponent)"
    raise UserError(f"recipe key '{key}': expected {_type_name(tp)}, got {value!r}{hint}")


def build(cls: type, data: Any, key: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking every key and type; ``key`` prefixes errors."""
    where = f"'{key}'" if key else "the recipe"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"recipe key {where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = set(fields)
    if not key:  # top level: `x-...` keys only hold YAML anchors for reuse below
        data = {k: v for k, v in data.items() if not str(k).startswith("x-")}
    unknown = sorted(set(data) - names)
    if unknown:
        full = f"{key}.{unknown[0]}" if key else unknown[0]
        raise UserError(f"recipe key '{full}' is unknown; expected one of: {', '.join(sorted(names))}")
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if required:  # else the dataclass raises a TypeError, a traceback instead of the key
        full = f"{key}.{required[0]}" if key else required[0]
        raise UserError(f"recipe key '{full}' is missing; expected {_type_name(hints[required[0]])}")
    kwargs = {}
    for name, value in data.items():
        full = f"{key}.{name}" if key else name
        kwargs[name] = _convert(value, hints[name], full)
        check_range(fields[name], kwargs[name], full)
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """The plain-data form of a recipe (what ``build`` reads back)."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


# ---------------------------------------------------------------------------------------------------
# YAML without silent duplicates


class DuplicateKeyError(yaml.YAMLError):
    """A key given twice in one YAML mapping; its text is one line with both line numbers."""


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping: PyYAML would silently keep the last,
    so ``epochs: 3`` repeated further down would win without a word. A ``<<`` merge may still be overridden
    (that is what merging is for): only keys written inside the mapping itself are compared."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            start, end = node.start_mark.index, node.end_mark.index
            for key_node, _ in node.value:
                # merged pairs (prepended by an earlier flatten) come from the anchor, outside this mapping
                if key_node.tag == "tag:yaml.org,2002:merge" or not start <= key_node.start_mark.index < end:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base constructor reports it
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise DuplicateKeyError(f"line {line}: duplicate key {key!r} (first given at line {first})")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys (:class:`UniqueKeyLoader`)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass: builds plain data only


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts; a number indexes a list (``students.0.train.epochs``) and ``*``
    means every element of it (``students.*.train.epochs``)."""
    parts = dotted.split(".")
    nodes: list = [tree]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        nxt_nodes = []
        for node in nodes:
            if isinstance(node, list):
                if part == "*":
                    targets = list(range(len(node)))
                elif part.isdigit() and int(part) < len(node):
                    targets = [int(part)]
                else:
                    raise UserError(f"--set {dotted}: '{where}': expected an index below {len(node)} or '*'")
            elif isinstance(node, dict):
                targets = [part]
            else:
                raise UserError(f"--set {dotted}: '{'.'.join(parts[:i])}' is not a section")
            for t in targets:
                if last:
                    node[t] = value
                else:
                    if isinstance(node, dict) and node.get(t) is None:
                        node[t] = {}
                    nxt_nodes.append(node[t])
        nodes = nxt_nodes


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=3`` -> ("a.b", 3); the value is read as YAML, so ``x=[1,2]`` and ``y=null`` work."""
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected KEY=VALUE, e.g. teacher.train.epochs=3")
    key, raw = text.split("=", 1)
    try:
        value = load_yaml(raw) if raw != "" else ""
    except DuplicateKeyError as err:
        raise UserError(f"--set {key}: value {raw!r}: {err}") from None
    except yaml.YAMLError as err:
        raise UserError(f"--set {key}: value {raw!r} is not valid YAML ({err.__class__.__name__})") from None
    return key.strip(), value


def load_recipe(path: str | Path | None, overrides: list[str] = ()) -> Recipe:
    """Read a YAML recipe (or start from defaults when ``path`` is None) and apply ``--set`` overrides."""
    tree: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"--recipe {p}: {'not a file' if p.exists() else 'file not found'}")
        try:
            tree = load_yaml(p.read_text()) or {}
        except UnicodeDecodeError:
            raise UserError(f"--recipe {p}: not a text file (expected UTF-8 YAML)") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None and not isinstance(err, DuplicateKeyError) else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise UserError(f"--recipe {p}: not valid YAML{where}: {problem}") from None
        if not isinstance(tree, dict):
            raise UserError(f"--recipe {p}: expected a mapping at the top level")
    return apply_overrides(tree, overrides)


def apply_overrides(tree: dict, overrides: list[str] = ()) -> Recipe:
    """The recipe ``tree`` (a recipe file's mapping, or a run's ``model.json`` recipe) with ``--set`` overrides."""
    # YAML aliases (*train) share one object between sections; a round trip through JSON gives each
    # section its own copy, so `--set single.train.epochs=1` changes the single model only.
    tree = json.loads(json.dumps(tree))
    for text in overrides:
        key, value = parse_override(text)
        if key.startswith("x-"):
            # The anchor's uses were expanded when the YAML was read: setting the block would change nothing.
            raise UserError(
                f"--set {key}: '{key.split('.')[0]}' only holds a YAML anchor; set the sections that use it "
                "(e.g. teacher.train.epochs, single.train.epochs, students.*.train.epochs)"
            )
        _set_path(tree, key, value)
    return build(Recipe, tree)


def recipe_from_dict(tree: dict) -> Recipe:
    return build(Recipe, tree)
