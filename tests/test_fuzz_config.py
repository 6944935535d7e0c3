"""Property-based fuzzing of config loading (hypothesis): whatever a user writes, the answer is a
``Spec`` or one ``ConfigError`` line, never another exception. What it found is pinned as plain
tests in test_config.py (deep nesting, capitalized and non-printable keys, NaN/inf numbers).

Valid configs are generated from the real pydantic sections (names from their ``Literal`` types,
numbers inside their ``Field`` bounds, the cross-field rules of their validators), so the
generator follows the models as they change. Mutated configs break them: unknown keys at any
depth (near-miss spellings too), wrong types, out-of-range and huge numbers, NaN/inf, random
strings, None, nested lists, non-string keys, deleted keys. ``--set`` overrides and whole YAML
files get the same treatment. ``derandomize=True``: every run tries the same examples.
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin

import annotated_types as at
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from mlptrain import config
from mlptrain.config import (
    FILE_NAMES, IMAGE_NAMES, TABLE_NAMES, DataName, DataSpec, LossSpec, ModelSpec, OptimizerSpec, Spec, SplitSpec,
    TrainSpec, apply_overrides, read_yaml, spec_to_dict, validate_dict,
)
from mlptrain.errors import ConfigError

FUZZ = settings(
    max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)



@pytest.fixture(autouse=True, scope="module")
def subnormal_floats():
    """hypothesis draws floats with IEEE arithmetic; a fit run in-process before (test_bad_input, test_cli)
    left torch.set_flush_denormal(True) on, which flushes subnormals to zero: turn it off meanwhile."""
    torch = sys.modules.get("torch")
    flushed = torch is not None and sys.float_info.min / 2 == 0.0
    if flushed:
        torch.set_flush_denormal(False)
    yield
    if flushed:
        torch.set_flush_denormal(True)


# ----------------------------------------------------------------------------------------------
# Valid configs, from the models' own fields.


TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
NAME = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,15}", fullmatch=True)  # a plain directory name


def _bounds(field: Any) -> dict[str, Any]:
    """Field(ge=, gt=, le=, lt=) as the keyword arguments of st.integers / st.floats."""
    kw: dict[str, Any] = {}
    for m in field.metadata:
        if isinstance(m, at.Ge):
            kw["min_value"] = m.ge
        elif isinstance(m, at.Gt):
            kw["min_value"], kw["exclude_min"] = m.gt, True
        elif isinstance(m, at.Le):
            kw["max_value"] = m.le
        elif isinstance(m, at.Lt):
            kw["max_value"], kw["exclude_max"] = m.lt, True
    return kw


def value_of(annotation: Any, bounds: Optional[dict[str, Any]] = None) -> st.SearchStrategy:
    """A valid value of a field's type, within its bounds."""
    bounds = bounds or {}
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return st.sampled_from(args)
    if origin is Union:
        return st.one_of([value_of(a, bounds) for a in args])
    if annotation is type(None):
        return st.none()
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return section(annotation)
    if origin is list:
        return st.lists(value_of(args[0]), max_size=3)
    if origin is tuple:
        return st.tuples(*(value_of(a) for a in args))
    if origin is dict:
        return st.dictionaries(value_of(args[0]), value_of(args[1]), max_size=3)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        low = bounds.get("min_value", -(10**6))
        low = low + 1 if bounds.get("exclude_min") else low
        high = bounds.get("max_value", low + 10**6)
        return st.integers(int(low), int(high - 1 if bounds.get("exclude_max") else high))
    if annotation is float:
        kw = {"min_value": -1e6, "max_value": 1e6, **bounds}
        return st.floats(allow_nan=False, allow_infinity=False, **kw)
    if annotation is str:
        return TEXT
    raise TypeError(f"no strategy for {annotation!r}: teach value_of about it")


# Fields whose valid values a validator (not a Field bound) decides, and fields set by the section builders.
SPECIAL: dict[tuple[type, str], Optional[st.SearchStrategy]] = {
    (Spec, "name"): st.none() | NAME.filter(lambda s: s not in (".", "..")),
    (Spec, "data"): None,  # data_section
    (Spec, "model"): None,  # model_section
    (SplitSpec, "val"): st.floats(0.0, 0.45),
    (SplitSpec, "test"): st.floats(0.0, 0.45),
    (TrainSpec, "batch_size"): st.integers(1, 4096) | st.just("full"),
    (TrainSpec, "device"): st.sampled_from(["auto", "cpu", "cuda", "cuda:0", "cuda:3"]),
    (TrainSpec, "precision"): st.sampled_from(["32", 32, "bf16-mixed", "16-mixed"]),
    (OptimizerSpec, "betas"): st.tuples(st.floats(0.0, 0.999), st.floats(0.0, 0.999)),
    (config.AugmentSpec, "scale"): st.none() | st.tuples(st.floats(0.5, 1.0), st.floats(1.0, 2.0)),  # 0 < min <= max
    (OptimizerSpec, "nesterov"): st.just(False),  # needs sgd with momentum: valid_config sets it then
    (config.CheckpointSpec, "every_steps"): st.none(),  # needs save_last: valid_config sets it then
    (LossSpec, "class_weight"): st.none() | st.just("balanced") | st.dictionaries(
        TEXT, st.floats(0.0, 100.0), min_size=1, max_size=3
    ).filter(lambda d: any(d.values())),
}


def section(model: type[BaseModel], skip: tuple[str, ...] = ()) -> st.SearchStrategy:
    """A valid mapping for ``model``: each optional field present or not; NamedSections also as a bare name."""
    required, optional = {}, {}
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        strategy = SPECIAL.get((model, name), ...)
        if strategy is None:
            continue
        if strategy is ...:
            strategy = value_of(field.annotation, _bounds(field))
        (required if field.is_required() else optional)[name] = strategy
    mapping = st.fixed_dictionaries(required, optional=optional)
    if issubclass(model, config.NamedSection):
        names = get_args(model.model_fields["name"].annotation)
        names = get_args(names[0]) if get_origin(names[0]) is Literal else names  # Optional[Literal[...]]
        mapping = mapping | st.sampled_from([n for n in names if n is not None])
    return mapping


@st.composite
def data_section(draw: st.DrawFn) -> dict[str, Any]:
    """data: the keys each kind of source takes (files: paths and columns; images: root and download)."""
    base = {"name", "path", "train_path", "val_path", "test_path", "target", "features", "id", "categorical",
            "missing", "root", "download", "subset"}
    d = draw(section(DataSpec, skip=tuple(base)))
    name = draw(st.sampled_from(get_args(DataName)))
    d["name"] = name
    if name in FILE_NAMES:
        if draw(st.booleans()):
            d["path"] = "rows." + name
        else:
            d["train_path"] = "train." + name
            d.update(draw(st.fixed_dictionaries({}, optional={"val_path": st.just("val.x"), "test_path": st.just("test.x")})))
        if name in TABLE_NAMES:
            columns = draw(st.lists(NAME, min_size=2, max_size=6, unique=True))
            d["target"] = columns[0] if draw(st.booleans()) else columns[:2]
            rest = [c for c in columns if c not in ([d["target"]] if isinstance(d["target"], str) else d["target"])]
            if rest and draw(st.booleans()):
                d["features"] = rest[1:]
                d["id"] = rest[0]
            if rest and draw(st.booleans()):
                d["categorical"] = rest[-1:]
            d["missing"] = draw(st.sampled_from(get_args(config.MissingPolicy)))
    if name in IMAGE_NAMES and draw(st.booleans()):
        d["root"] = "images"
        d["download"] = draw(st.booleans())
    if name == "emnist":
        d["subset"] = draw(st.sampled_from(get_args(config.EmnistSubset)))
    return d


@st.composite
def model_section(draw: st.DrawFn) -> dict[str, Any]:
    """model: hidden widths, and one activation or exactly one per hidden layer."""
    d = draw(section(ModelSpec, skip=("hidden", "activation")))
    hidden = draw(st.lists(st.integers(1, 512), max_size=4))
    d["hidden"] = hidden
    one = section(config.ActivationSpec)
    d["activation"] = draw(one | st.lists(one, min_size=len(hidden), max_size=len(hidden)))
    return d


@st.composite
def valid_config(draw: st.DrawFn) -> dict[str, Any]:
    d = draw(section(Spec))
    d["data"] = draw(data_section())
    if draw(st.booleans()):
        d["model"] = draw(model_section())
    optimizer = d.get("optimizer")
    if isinstance(optimizer, dict) and optimizer.get("name") == "sgd" and optimizer.get("momentum", 0) > 0:
        optimizer["nesterov"] = draw(st.booleans())
    ckpt = d.get("train", {}).get("checkpoint")
    if isinstance(ckpt, dict) and ckpt.get("save_last", True):
        ckpt["every_steps"] = draw(st.none() | st.integers(1, 10**6))
    adversarial = d.get("adversarial")
    if isinstance(adversarial, dict) and adversarial.get("method") is not None and adversarial.get("epsilon") is None:
        adversarial["epsilon"] = draw(st.floats(1e-3, 1.0))  # a method needs its ε
    reg = d.get("regularization")
    if isinstance(reg, dict) and not (reg.get("l1") or reg.get("l2")):
        reg.pop("include_bias", None)  # it adds the biases to the l1 and l2 penalties: refused without one
    return d


# ----------------------------------------------------------------------------------------------
# Mutations: what a user (or a bad merge) does to a config.

ALL_KEYS = sorted({name for m in (Spec, *config.Section.__subclasses__(), *config.NamedSection.__subclasses__())
                   for name in m.model_fields})
KEY = st.one_of(TEXT, st.integers(), st.none(), st.floats(), st.booleans(), st.tuples(st.integers()), st.sampled_from(ALL_KEYS))
JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), TEXT,
    st.sampled_from([2**63, -(2**63) - 1, 10**100, -(10**400), float("nan"), float("inf"), -float("inf"), "", "x" * 500]),
    st.binary(max_size=8),
    st.lists(st.lists(st.integers() | TEXT | st.none(), max_size=3), max_size=3),
    st.dictionaries(KEY, st.integers() | TEXT | st.none(), max_size=3),
    st.recursive(st.integers() | st.none(), lambda inner: st.lists(inner, max_size=2) | st.dictionaries(TEXT, inner, max_size=2), max_leaves=8),
)


BAD_NUMBER = st.sampled_from([float("nan"), float("inf"), -float("inf"), -1, -1e-9, 0, 0.0, 1.0, 2**63, 10**100, -(10**400)])


def typo(key: str) -> st.SearchStrategy:
    """Near misses of a real key: a letter dropped, doubled or swapped."""
    edits = [key[:i] + key[i + 1:] for i in range(len(key))] + [key[:i] + key[i] + key[i:] for i in range(len(key))]
    edits += [key[:i] + key[i + 1] + key[i] + key[i + 2:] for i in range(len(key) - 1)]
    return st.sampled_from([e for e in edits if e and e != key] or [key + "x"])


def sections(node: Any) -> list[Any]:
    """Every mapping in a nested config (inside lists too)."""
    found = [node] if isinstance(node, dict) else []
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        found += sections(child)
    return found


@st.composite
def mutated_config(draw: st.DrawFn) -> dict[str, Any]:
    d = copy.deepcopy(draw(valid_config()))
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(sections(d)))
        keys = list(target)
        numbers = [k for k in keys if isinstance(target[k], (int, float)) and not isinstance(target[k], bool)]
        actions = ["set", "unknown"] + (["typo", "delete"] if keys else []) + (["number"] if numbers else [])
        action = draw(st.sampled_from(actions))
        if action == "number":  # out of range, non-finite, huge
            target[draw(st.sampled_from(numbers))] = draw(BAD_NUMBER)
        elif action == "delete":
            del target[draw(st.sampled_from(keys))]
        elif action == "typo":
            key = draw(st.sampled_from([k for k in keys if isinstance(k, str)] or ["data"]))
            target[draw(typo(key))] = target.get(key, draw(JUNK))
        elif action == "unknown":
            target[draw(KEY)] = draw(JUNK | valid_config())
        else:
            target[draw(st.sampled_from(keys) if keys else KEY)] = draw(JUNK)
    return d


# ----------------------------------------------------------------------------------------------
# The properties


def floats_in(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in floats_in(v)]
    if isinstance(value, (list, tuple)):
        return [f for v in value for f in floats_in(v)]
    return []


def check(raw: Any, source: str = "config") -> Optional[Spec]:
    """validate_dict's contract: a Spec with only finite numbers, or one ConfigError line naming the source."""
    try:
        spec = validate_dict(raw, source)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(f"{source}: ") and len(message) > len(source) + 2
        assert message == " ".join(message.splitlines()), "a ConfigError must print as one line"
        return None
    assert isinstance(spec, Spec)
    assert all(math.isfinite(f) for f in floats_in(spec.model_dump()))
    return spec


@FUZZ
@given(valid_config())
def test_valid_configs_validate_and_their_dump_validates_to_the_same_spec(raw: dict[str, Any]) -> None:
    spec = check(raw)
    assert spec is not None, raw
    assert validate_dict(spec_to_dict(spec)) == spec


@settings(FUZZ, max_examples=400)
@given(mutated_config())
def test_mutated_configs_give_a_spec_or_one_config_error(raw: dict[str, Any]) -> None:
    check(raw)


def number_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of every int/float field below ``model`` (optimizer.lr, data.split.val, model.init.bias, ...)."""
    paths = []
    for name, field in model.model_fields.items():
        args = set(config._flatten(field.annotation))
        sub = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is not None:
            paths += number_paths(sub, f"{prefix}{name}.")
        elif args & {int, float}:
            paths.append(prefix + name)
    return paths


def yaml_number(value: Union[int, float]) -> str:
    return {"nan": ".nan", "inf": ".inf", "-inf": "-.inf"}.get(repr(value), repr(value))


@settings(FUZZ, max_examples=300)
@given(valid_config(), st.sampled_from(number_paths(Spec)), BAD_NUMBER | st.floats() | st.integers())
def test_every_number_field_refuses_out_of_range_and_non_finite_values(raw: dict[str, Any], path: str, value: Any) -> None:
    try:
        raw = apply_overrides(raw, [f"{path}={yaml_number(value)}"])
    except ConfigError:  # model.activation.slope where model.activation is a list
        return
    spec = check(raw)
    if spec is not None and isinstance(value, float) and not math.isfinite(value):
        pytest.fail(f"{path} = {value} was accepted")


# --set: real key paths and random ones, values from YAML's odd corners
VALUE_TEXT = st.one_of(
    TEXT,
    st.sampled_from([
        "[1, 2", "{a: 1}", "{1: 2, null: 3}", "!!python/object/apply:os.system [echo]", "&a [*a]", "1e999", ".nan",
        "-.inf", "~", "null", "[[[]]]", "!!binary aGk=", "!!set {a, b}", "2001-12-14", "9" * 400, "'unclosed", ": :",
        "\t", "- - -", "!!float abc", "*undefined", "%TAG ! x",
    ]),
    st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 3000).map(lambda n: "{a: " * n + "}" * n),
)
KEY_PART = st.sampled_from(ALL_KEYS) | TEXT


def leaf_paths(node: Any, prefix: str = "") -> list[str]:
    """Dotted paths of a config's values, as --set spells them."""
    if not isinstance(node, dict):
        return [prefix] if prefix else []
    return [p for k, v in node.items() for p in leaf_paths(v, f"{prefix}.{k}" if prefix else str(k))]


@st.composite
def overrides_for(draw: st.DrawFn, raw: dict[str, Any]) -> list[str]:
    """--set items: mostly real paths of ``raw`` (or near misses), some random ones; values from YAML's corners."""
    paths = leaf_paths(raw)
    key = st.sampled_from(paths).flatmap(lambda p: st.just(p) | typo(p)) | st.lists(KEY_PART, max_size=4).map(".".join)
    value = VALUE_TEXT | st.sampled_from([".nan", ".inf", "-.inf", "-1", "0", "1e400", "10" * 60, "abc", "[]", "{}"])
    item = st.builds(lambda k, sep, v: k + sep + v, key, st.sampled_from(["=", "=", "=", "", "==", " = "]), value)
    return draw(st.lists(item, min_size=1, max_size=3))


@settings(FUZZ, max_examples=300)
@given(st.data())
def test_set_overrides_give_a_spec_or_one_config_error(data: st.DataObject) -> None:
    raw = data.draw(valid_config())
    overrides = data.draw(overrides_for(raw))
    try:
        result = apply_overrides(copy.deepcopy(raw), overrides)
    except ConfigError as exc:
        assert str(exc).startswith("--set ") and "\n" not in str(exc)
        return
    assert isinstance(result, dict)
    check(result)


# whole files: random text, YAML-flavoured token soup, deep nesting, random bytes
TOKENS = [
    "data:", "model:", " name: moons", "\n", " ", "  ", "- ", "[", "]", "{", "}", ":", ",", "&a ", "*a", "<<: *a",
    "!!python/object:os.system", "!!python/name:os.system", "!!str ", "!custom ", "'", '"', "#", "|", ">", "? ",
    "1e3", ".nan", ".inf", "\t", "\x00", "\ufeff", "%YAML 1.1\n", "---\n", "...\n", "~", "2001-12-14", "0x1F", "0o17",
]
YAML_TEXT = st.one_of(
    TEXT,
    st.lists(st.sampled_from(TOKENS), max_size=30).map("".join),
    st.integers(1, 3000).map(lambda n: "data: " + "[" * n + "]" * n + "\n"),
    st.integers(1, 3000).map(lambda n: "a:\n  " + "- " * n + "x\n"),
)


@pytest.fixture(scope="module")
def yaml_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "fuzz.yaml"


@settings(FUZZ, max_examples=300)
@given(content=YAML_TEXT | st.binary(max_size=64))
def test_read_yaml_gives_a_mapping_or_one_config_error(yaml_path: Path, content: Union[str, bytes]) -> None:
    path = yaml_path
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    try:
        raw = read_yaml(path)
    except ConfigError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
        return
    assert isinstance(raw, dict)
    check(raw, str(path))
