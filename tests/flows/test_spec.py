"""Spec validation: every bad input is refused with a message naming the field."""

from __future__ import annotations

from typing import Any

import pytest

import examples.digits  # noqa: F401  (registers the trainable)
from flows.spec import ExperimentSpec, SpecError, load_spec, spec_differences

GOOD: dict[str, Any] = {
    "name": "digits-test",
    "trainable": "digits",
    "metric": "error",
    "mode": "min",
    "space": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "hidden": {"type": "int", "low": 16, "high": 128, "step": 16},
        "act": {"type": "categorical", "choices": ["relu", "tanh"]},
    },
    "scheduler": "random",
    "scheduler_args": {"max_t": 3},
    "budget": {"max_trials": 4},
    "max_concurrency": 2,
    "seed": 0,
}


def with_(**changes: Any) -> dict[str, Any]:
    spec = {**GOOD, **changes}
    return {k: v for k, v in spec.items() if v is not _DROP}


_DROP = object()


def space_with(name: str, dist: Any) -> dict[str, Any]:
    return with_(space={**GOOD["space"], name: dist})


# (payload, text that must appear in the error: the field and/or the rule)
BAD: list[tuple[dict[str, Any], str]] = [
    (with_(name=_DROP), "name"),
    (with_(name=""), "name"),
    (with_(name="../etc"), "name"),
    (with_(name="a/b"), "name"),
    (with_(name="/abs/path"), "name"),
    (with_(name="x" * 101), "name"),
    (with_(name=12), "name"),
    (with_(trainable="nope"), "trainable"),
    (with_(trainable="os.system"), "trainable"),
    (with_(trainable="../../evil"), "trainable"),
    (with_(metric=""), "metric"),
    (with_(mode="maximize"), "mode"),
    (with_(space={}), "space"),
    (with_(space="lr"), "space"),
    (space_with("x", {"type": "float", "low": 1, "high": 0}), "space.x.low"),
    (space_with("x", {"type": "float", "low": 0, "high": 1, "log": True}), "space.x.low"),
    (space_with("x", {"type": "float", "low": "a", "high": 1}), "space.x.low"),
    (space_with("x", {"type": "float", "low": 0, "high": float("inf")}), "space.x.high"),
    (space_with("x", {"type": "int", "low": 0.5, "high": 3}), "space.x.low"),
    (space_with("x", {"type": "int", "low": 1, "high": 9, "step": 0}), "space.x.step"),
    (space_with("x", {"type": "categorical", "choices": []}), "space.x.choices"),
    (space_with("x", {"type": "categorical", "choices": [{"a": 1}]}), "space.x.choices"),
    (space_with("x", {"type": "uniform", "low": 0, "high": 1}), "space.x.type"),
    (space_with("x", {"type": "float", "low": 0, "high": 1, "extra": 3}), "space.x"),
    (space_with("x", 3), "space.x"),
    (space_with("bad name!", {"type": "float", "low": 0, "high": 1}), "space parameter name"),
    (with_(scheduler="bohb"), "scheduler"),
    (with_(scheduler_args={"max_t": 0}), "max_t"),
    (with_(scheduler_args={"max_t": "ten"}), "max_t"),
    (with_(scheduler_args={"max_t": 3, "nope": 1}), "scheduler_args.nope"),
    (with_(scheduler_args={"max_t": 3, "seed": 1}), "scheduler_args.seed"),
    (with_(scheduler_args={"max_t": 3, "custom_explore_fn": "os.system"}), "custom_explore_fn"),
    (with_(budget={"max_trials": 0}), "budget.max_trials"),
    (with_(budget={"max_resource": -1}), "budget.max_resource"),
    (with_(budget={"max_trials": 2, "max_time": 3}), "budget.max_time"),
    (with_(budget={}), "budget"),
    (with_(max_concurrency=0), "max_concurrency"),
    (with_(max_concurrency=10_000), "max_concurrency"),
    (with_(max_concurrency="many"), "max_concurrency"),
    (with_(seed=-1), "seed"),
    (with_(seed=2**40), "seed"),
    (with_(segment_retries=11), "segment_retries"),
    (with_(task_runner="ray-cluster"), "task_runner"),
    (with_(task_runner="ray", num_cpus=-1), "num_cpus"),
    (with_(task_runner="ray", num_cpus=2000), "num_cpus"),
    (with_(task_runner="ray", num_cpus=1.5), "num_cpus is 1.5, but must be in [0, 1]"),
    (with_(task_runner="ray", num_gpus=65), "num_gpus"),
    (with_(task_runner="ray", num_gpus=2.5), "num_gpus is 2.5, but must be in [0, 1]"),
    (with_(task_runner="ray", num_gpus="one"), "num_gpus"),
    (with_(task_runner="dask", num_cpus=2), "num_cpus is set, but only task_runner 'ray'"),
    (with_(num_gpus=1), "num_gpus is set, but only task_runner 'ray'"),
    (with_(ray_address="ray://head:10001"), "ray_address"),
    (with_(database_url="sqlite:////tmp/x.db"), "database_url"),
    (with_(checkpoints="/etc"), "checkpoints"),
    (with_(unknown_key=1), "unknown_key"),
    (with_(trainable_args={"x": float("nan")}), "trainable_args"),
    # bool is not a number, although pydantic (and YAML's "yes") would make it 1
    (with_(seed=True), "seed is true"),
    (with_(max_concurrency=True), "max_concurrency is true"),
    (with_(segment_retries=False), "segment_retries is false"),
    (with_(budget={"max_trials": True}), "max_trials is true"),
    (with_(budget={"max_resource": True}), "max_resource is true"),
    # a budget that cannot start one segment would "finish" with 0 trials
    (with_(budget={"max_resource": 2}, scheduler_args={"max_t": 3}), "0 trials"),
    # (HyperBand now opens a partial bracket for a small budget, so ASHA shows it)
    (with_(scheduler="asha", scheduler_args={"max_t": 9, "grace_period": 3},
           budget={"max_resource": 2}),
     "cannot start a single segment"),
]


@pytest.mark.parametrize(("payload", "needle"), BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_spec_is_refused_with_the_field_named(payload: dict[str, Any], needle: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(payload)
    assert needle in str(info.value), str(info.value)


def test_at_least_thirty_malformed_inputs() -> None:
    assert len(BAD) >= 30


def test_range_errors_say_the_rule() -> None:
    with pytest.raises(SpecError) as info:
        load_spec(with_(max_concurrency=0))
    assert "greater than or equal to 1" in str(info.value)
    with pytest.raises(SpecError) as info:
        load_spec(space_with("x", {"type": "float", "low": 2, "high": 1}))
    assert "must be <= high" in str(info.value)


def test_good_spec_round_trips_through_json() -> None:
    spec = load_spec(GOOD)
    again = ExperimentSpec.model_validate(spec.to_json())
    assert again == spec
    assert spec_differences(spec.to_json(), again) == []


def test_yaml_file(tmp_path: Any) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(
        "name: y\ntrainable: digits\nmetric: error\n"
        "space: {lr: {type: float, low: 0.1, high: 1}}\n"
        "scheduler_args: {max_t: 2}\nbudget: {max_trials: 2}\n"
    )
    assert load_spec(path).name == "y"
    path.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)


def test_differences_name_what_changed() -> None:
    stored = load_spec(GOOD).to_json()
    changed = load_spec(space_with("lr", {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}))
    diffs = spec_differences(stored, changed)
    assert any("lr" in d and "changed" in d for d in diffs)
    other = load_spec(with_(scheduler_args={"max_t": 5}))
    assert any(d.startswith("scheduler_args") for d in spec_differences(stored, other))
    faster = load_spec(with_(max_concurrency=4))
    assert spec_differences(stored, faster) == []


# ---------------------------------------------------------------- spec files
def _alias_bomb() -> str:
    """The issue's "billion laughs": 2.6 KB that would expand to ~10^9 values."""
    lines = ["a: &a [" + ", ".join(['"lol"'] * 9) + "]"]
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    lines += [f"pad{i}: [" + ", ".join(["*i"] * 30) + "]" for i in range(18)]
    return "\n".join(lines) + "\n"


GOOD_YAML = (
    "name: y\ntrainable: digits\nmetric: error\n"
    "space: {lr: {type: float, low: 0.1, high: 1}}\n"
    "scheduler_args: {max_t: 2}\nbudget: {max_trials: 2}\n"
)

BAD_FILES: list[tuple[bytes, str]] = [
    (_alias_bomb().encode(), "expands to more than"),
    # 50,000 levels: refused by libyaml's own bound or by ours, never a RecursionError
    (b"name: " + b"[" * 50_000 + b"]" * 50_000 + b"\n", "spec.yaml"),
    (b"space: " + b"{a: " * 50_000 + b"1" + b"}" * 50_000 + b"\n", "spec.yaml"),
    ("".join(f"{'  ' * i}k{i}:\n" for i in range(100)).encode() + b"x: 1\n", "deeper than 64"),
    (b"a: &a [1, *a]\n", "recursive alias"),
    (GOOD_YAML.replace("name: y", "name: caf\xe9").encode("latin-1"), "not UTF-8"),
    (b"\xff\xfe" + GOOD_YAML.encode("utf-16-le"), "not UTF-8"),
    (GOOD_YAML.encode() + b"# " + b"x" * (1 << 20) + b"\n", "larger than 1024 KiB"),
    (GOOD_YAML.encode() + b"name: z\n", "duplicate key 'name'"),
    (GOOD_YAML.replace("high: 1}", "high: 1, low: 0.2}").encode(), "duplicate key 'low'"),
    (GOOD_YAML.encode() + b"seed: true\n", "seed is true"),
    (GOOD_YAML.encode() + b"seed: yes\n", "seed is true"),  # YAML 1.1: yes is true
    (b"- just\n- a list\n", "mapping at the top level"),
    (b"", "mapping at the top level"),
    (GOOD_YAML.encode() + b"---\nname: second\n", "not valid YAML"),
]


@pytest.mark.parametrize(
    ("content", "needle"), BAD_FILES, ids=[f"file{i}" for i in range(len(BAD_FILES))]
)
def test_bad_spec_file_is_refused_before_it_expands(
    content: bytes, needle: str, tmp_path: Any
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert needle in message, message
    assert "\n" not in message, "one problem, one line"


def test_the_alias_bomb_is_small_and_refused_without_expanding(tmp_path: Any) -> None:
    bomb = _alias_bomb()
    assert 2_500 < len(bomb) < 2_800
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    with pytest.raises(SpecError, match="expands to more than 100000 values"):
        load_spec(path)


def test_merge_keys_and_a_few_aliases_are_fine(tmp_path: Any) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(
        "name: y\ntrainable: digits\nmetric: error\n"
        "space: {lr: &d {type: float, low: 0.1, high: 1}, wd: {<<: *d, high: 0.5}}\n"
        "scheduler_args: {max_t: 2}\nbudget: {max_trials: 2}\n"
    )
    space = load_spec(path).search_space.to_json()
    assert space["lr"] != space["wd"] and "0.5" in str(space["wd"])


def test_utf8_with_a_byte_order_mark_is_fine(tmp_path: Any) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD_YAML.encode())
    assert load_spec(path).name == "y"
