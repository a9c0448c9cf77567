"""CheckpointStore on a local directory and on fsspec's memory:// filesystem."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from pathlib import Path

import pytest

from storage import CheckpointError, CheckpointStore


@pytest.fixture(params=["local", "memory"])
def ckpt(request: pytest.FixtureRequest, tmp_path: Path) -> CheckpointStore:
    if request.param == "local":
        return CheckpointStore(str(tmp_path / "ckpt"))
    # memory:// is process-global; a unique root keeps tests apart.
    return CheckpointStore(f"memory://ckpt-{uuid.uuid4().hex}")


def test_put_get_round_trip(ckpt: CheckpointStore) -> None:
    data = b"\x00weights\xff" * 100
    ref = ckpt.put("exp", "t0001", "0-3", data, resource=3)
    assert ref.key == "exp/t0001/0-3.ckpt"
    assert (ref.size, ref.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert (ref.trial_id, ref.resource) == ("t0001", 3.0)
    assert ckpt.get(ref) == data
    assert ckpt.exists(ref.key)
    assert ckpt.keys("exp") == [ref.key]
    assert ckpt.disk_usage("exp") == len(data)


def test_put_is_idempotent_and_leaves_no_temporaries(ckpt: CheckpointStore) -> None:
    first = ckpt.put("exp", "t0", "0-1", b"abc", 1.0)
    again = ckpt.put("exp", "t0", "0-1", b"abc", 1.0)
    assert first == again
    assert ckpt.get(again) == b"abc"
    listed = ckpt.fs.find(f"{ckpt.root}/exp", withdirs=False)
    assert [p.rsplit("/", 1)[-1] for p in listed] == ["0-1.ckpt"]


def test_unknown_experiment_is_empty(ckpt: CheckpointStore) -> None:
    assert ckpt.keys("nope") == []
    assert ckpt.disk_usage("nope") == 0
    assert ckpt.retain("nope", set()) == []


def test_missing_checkpoint(ckpt: CheckpointStore) -> None:
    ref = ckpt.put("exp", "t0", "0-1", b"abc", 1.0)
    ckpt.delete(ref.key)
    ckpt.delete(ref.key)  # deleting twice is fine
    assert not ckpt.exists(ref.key)
    with pytest.raises(CheckpointError, match=r"'exp'.*'t0'.*missing"):
        ckpt.get(ref)


def test_corrupted_checkpoint_fails_sha256(ckpt: CheckpointStore) -> None:
    ref = ckpt.put("exp", "t0", "0-1", b"good bytes", 1.0)
    ckpt.fs.pipe_file(f"{ckpt.root}/{ref.key}", b"evil bytes")  # same size, other content
    with pytest.raises(CheckpointError, match=r"sha256 .* but the log recorded"):
        ckpt.get(ref)


def test_truncated_checkpoint_fails_size(ckpt: CheckpointStore) -> None:
    ref = ckpt.put("exp", "t0", "0-1", b"good bytes", 1.0)
    ckpt.fs.pipe_file(f"{ckpt.root}/{ref.key}", b"good")
    with pytest.raises(CheckpointError, match=r"has 4 bytes, but the log recorded 10"):
        ckpt.get(ref)


@pytest.mark.parametrize(
    ("component", "kwargs"),
    [
        ("experiment", {"experiment": ".."}),
        ("experiment", {"experiment": "../outside"}),
        ("experiment", {"experiment": "/etc/passwd"}),
        ("experiment", {"experiment": ""}),
        ("trial_id", {"trial_id": "a/b"}),
        ("trial_id", {"trial_id": ".hidden"}),
        ("trial_id", {"trial_id": "a..b"}),
        ("segment", {"segment": "../../etc/passwd"}),
        ("segment", {"segment": "C:\\x"}),
        ("segment", {"segment": "x" * 129}),
    ],
)
def test_unsafe_names_are_rejected(
    ckpt: CheckpointStore, component: str, kwargs: dict[str, str]
) -> None:
    args = {"experiment": "exp", "trial_id": "t0", "segment": "0-1", **kwargs}
    with pytest.raises(ValueError, match=component):
        ckpt.put(data=b"x", resource=1.0, **args)


@pytest.mark.parametrize(
    "key",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "/abs/t0/0-1.ckpt",
        "exp/../0-1.ckpt",
        "exp/t0/../../x.ckpt",
        "exp/t0/0-1",
        "exp/t0/sub/0-1.ckpt",
    ],
)
def test_stored_keys_are_revalidated(ckpt: CheckpointStore, key: str) -> None:
    ref = ckpt.put("exp", "t0", "0-1", b"abc", 1.0)
    tampered = dataclasses.replace(ref, key=key)
    with pytest.raises(ValueError, match=r"key|experiment|trial_id|segment"):
        ckpt.get(tampered)
    with pytest.raises(ValueError):
        ckpt.exists(key)
    with pytest.raises(ValueError):
        ckpt.delete(key)


def test_local_files_stay_under_root(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path / "root"))
    store.put("exp", "t0", "0-1", b"abc", 1.0)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [tmp_path / "root" / "exp" / "t0" / "0-1.ckpt"]


def test_file_url_root(tmp_path: Path) -> None:
    store = CheckpointStore(f"file://{tmp_path / 'viaurl'}")
    ref = store.put("exp", "t0", "0-1", b"abc", 1.0)
    assert (tmp_path / "viaurl" / "exp" / "t0" / "0-1.ckpt").read_bytes() == b"abc"
    assert store.get(ref) == b"abc"


def test_retain_keeps_keep_set_and_last_k_by_resource(ckpt: CheckpointStore) -> None:
    for seg in ["0-1", "1-3", "3-9", "9-27", "0.5-1e+16", "1e-05-0.5"]:
        ckpt.put("exp", "a", seg, seg.encode(), 0.0)
    for seg in ["0-1", "1-3"]:
        ckpt.put("exp", "b", seg, seg.encode(), 0.0)
    ckpt.put("exp", "c", "not-a-range", b"?", 0.0)
    ckpt.put("other", "a", "0-1", b"x", 0.0)

    deleted = ckpt.retain("exp", keep={"exp/a/0-1.ckpt"}, keep_last=2)

    # a ordered by stop: 1e-05-0.5, 0-1, 1-3, 3-9, 9-27, 0.5-1e+16 -> newest two kept.
    assert deleted == ["exp/a/1-3.ckpt", "exp/a/1e-05-0.5.ckpt", "exp/a/3-9.ckpt"]
    assert ckpt.keys("exp") == [
        "exp/a/0-1.ckpt",
        "exp/a/0.5-1e+16.ckpt",
        "exp/a/9-27.ckpt",
        "exp/b/0-1.ckpt",
        "exp/b/1-3.ckpt",
        "exp/c/not-a-range.ckpt",  # unorderable: kept
    ]
    assert ckpt.keys("other") == ["other/a/0-1.ckpt"]


def test_retain_with_explicit_order(ckpt: CheckpointStore) -> None:
    for seg in ["0-1", "1-2", "2-3", "3-4"]:
        ckpt.put("exp", "p", seg, b"x", 0.0)
    ckpt.put("exp", "q", "0-1", b"x", 0.0)
    # Explicit order (oldest first) overrides resource order; unlisted 3-4 counts as oldest.
    deleted = ckpt.retain(
        "exp", keep=set(), keep_last=1, per_trial={"p": ["2-3", "exp/p/1-2.ckpt", "0-1"]}
    )
    assert deleted == ["exp/p/1-2.ckpt", "exp/p/2-3.ckpt", "exp/p/3-4.ckpt"]
    assert ckpt.keys("exp") == ["exp/p/0-1.ckpt", "exp/q/0-1.ckpt"]


def test_retain_keep_last_zero_and_validation(ckpt: CheckpointStore) -> None:
    ckpt.put("exp", "p", "0-1", b"x", 0.0)
    ckpt.put("exp", "p", "1-2", b"x", 0.0)
    assert ckpt.retain("exp", keep={"exp/p/1-2.ckpt"}, keep_last=0) == ["exp/p/0-1.ckpt"]
    with pytest.raises(ValueError, match="keep_last is -1"):
        ckpt.retain("exp", keep=set(), keep_last=-1)


def test_retain_orders_seq_suffixed_segments(ckpt: CheckpointStore) -> None:
    # The flow names segments "start-stop.s<seq>"; a later seq is newer for the same range.
    for seg in ["0-1.s3", "1-2.s9", "1-2.s15", "0-1.s20", "2-4.s30"]:
        ckpt.put("exp", "p", seg, b"x", 0.0)
    deleted = ckpt.retain("exp", keep={"exp/p/0-1.s3.ckpt"}, keep_last=2)
    assert deleted == ["exp/p/0-1.s20.ckpt", "exp/p/1-2.s9.ckpt"]
    assert ckpt.keys("exp") == ["exp/p/0-1.s3.ckpt", "exp/p/1-2.s15.ckpt", "exp/p/2-4.s30.ckpt"]
