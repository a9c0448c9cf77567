"""Checkpoint blobs outside SQL, on a local directory or any fsspec URL.

Keys are ``experiment/trial_id/segment.ckpt``. Every component is checked
against :data:`NAME_PATTERN` before it touches a path: names come from flow
parameters and from stored events, and neither may choose a file outside the
store (``..``, ``/etc/passwd``, absolute paths, hidden files). The size and
sha256 recorded in a :class:`~schedulers.events.CheckpointRef` are verified on
every read, so a truncated or swapped file fails loudly instead of silently
restoring the wrong weights.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schedulers.events import CheckpointRef
from storage.errors import CheckpointError, CheckpointStoreUnavailableError

if TYPE_CHECKING:
    # fsspec is imported where a root is resolved or a store opened:
    # `rungflow list` and `export` import this module (through `storage`)
    # but touch no checkpoint, and importing fsspec costs ~25 ms of CPU.
    import fsspec

__all__ = [
    "NAME_PATTERN",
    "SUFFIX",
    "CheckpointStore",
    "is_process_local",
    "resolve_root",
    "split_key",
    "validate_name",
]

#: Allowed experiment names, trial ids and segment names. ``+`` is allowed
#: because segment names embed ``repr(float)``, e.g. ``"0-1e+16"``.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]{0,127}$")
SUFFIX = ".ckpt"
# A segment name is "start-stop" with each number as written by segment_key(),
# optionally followed by ".s<seq>" (the SegmentStarted seq the flow appends so a
# re-run of the same range never overwrites a checkpoint still in use).
_NUM = r"(\d+(?:\.\d*)?(?:e[+-]?\d+)?|inf)"
_SEGMENT = re.compile(rf"^{_NUM}-{_NUM}(?:\.s(\d+))?$")


def validate_name(component: str, value: Any) -> str:
    """Return ``value`` if it is a safe key component, else raise ``ValueError``.

    Args:
        component: What the value is ("experiment", "trial_id", "segment"), for the message.
        value: The untrusted name.
    """
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value) or ".." in value:
        raise ValueError(
            f"{component} is {value!r}, but must match {NAME_PATTERN.pattern} "
            "and must not contain '..'"
        )
    return value


def split_key(key: Any) -> tuple[str, str, str]:
    """Validate a stored key and return ``(experiment, trial_id, segment)``.

    Raises:
        ValueError: the key is not ``experiment/trial_id/segment.ckpt`` with safe parts.
    """
    if not isinstance(key, str) or key.count("/") != 2 or not key.endswith(SUFFIX):
        raise ValueError(
            f"checkpoint key is {key!r}, but must be 'experiment/trial_id/segment{SUFFIX}'"
        )
    experiment, trial_id, filename = key.split("/")
    segment = filename[: -len(SUFFIX)]
    return (
        validate_name("experiment", experiment),
        validate_name("trial_id", trial_id),
        validate_name("segment", segment),
    )


def resolve_root(root: str) -> str:
    """``root`` made independent of the current directory.

    Workers (processes, Dask workers) receive the root as a string and may run
    in another working directory, so a relative local path (``ckpt``,
    ``./ckpt``, ``file://ckpt``, ``~/ckpt``) becomes an absolute path. URLs of
    other filesystems (``s3://``, ``gcs://``, ``memory://``...) are returned
    unchanged.
    """
    from fsspec.core import split_protocol

    root = str(root)
    protocol, path = split_protocol(root)
    if protocol not in (None, "file", "local"):
        return root
    return str(Path(path).expanduser().resolve())


def is_process_local(root: str) -> bool:
    """Whether ``root`` lives in this process's memory (``memory://``).

    Such a store is invisible to workers in other processes, so checkpoints
    written there by one worker could never be restored by another.
    """
    from fsspec.core import split_protocol

    return split_protocol(str(root))[0] == "memory"


def make_key(experiment: str, trial_id: str, segment: str) -> str:
    """Build a key from validated components."""
    validate_name("experiment", experiment)
    validate_name("trial_id", trial_id)
    validate_name("segment", segment)
    return f"{experiment}/{trial_id}/{segment}{SUFFIX}"


def _segment_order(key: str) -> tuple[float, float, int] | None:
    match = _SEGMENT.fullmatch(split_key(key)[2])
    if match is None:
        return None
    start, stop, seq = match.groups()
    return (float(stop), float(start), int(seq or 0))


class CheckpointStore:
    """Content-verified blob store for segment checkpoints.

    Args:
        root: Local directory or fsspec URL (``file://``, ``memory://``,
            ``s3://bucket/prefix`` ...). Created if it is a local path.

    Example:
        >>> store = CheckpointStore("memory://doc-example")
        >>> ref = store.put("exp", "t0000", "0-3", b"weights", resource=3.0)
        >>> ref.key, store.get(ref)
        ('exp/t0000/0-3.ckpt', b'weights')
    """

    def __init__(self, root: str) -> None:
        from fsspec.core import url_to_fs

        fs, path = url_to_fs(str(root))
        self.fs: fsspec.AbstractFileSystem = fs
        self.root: str = str(path).rstrip("/") or "/"
        self.url = str(root)
        try:
            self.fs.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise self._unavailable("cannot be created", exc) from exc

    def _unavailable(self, what: str, exc: OSError) -> CheckpointStoreUnavailableError:
        """An infrastructure error (disk full, read-only, gone): never a trial's fault."""
        reason = exc.strerror or str(exc) or type(exc).__name__
        hint = (
            "free space, then run the same command again to resume"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else "make it writable or choose another --checkpoints / RUNGFLOW_CHECKPOINTS, "
            "then run the same command again to resume"
        )
        return CheckpointStoreUnavailableError(
            f"checkpoint store {self.url} {what}: {reason}; {hint}"
        )

    def check_writable(self) -> None:
        """Write, read back and delete a small probe file under the root.

        Raises:
            CheckpointStoreUnavailableError: the root cannot be written (read-only,
                no permission, full disk, not a directory).
        """
        probe = f"{self.root}/.rungflow-probe-{uuid.uuid4().hex}"
        try:
            self.fs.pipe_file(probe, b"rungflow")
            self.fs.rm_file(probe)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.fs.rm_file(probe)
            raise self._unavailable("is not writable", exc) from exc

    def __repr__(self) -> str:
        return f"CheckpointStore({self.url!r})"

    def _path(self, key: str) -> str:
        split_key(key)
        return f"{self.root}/{key}"

    def put(
        self, experiment: str, trial_id: str, segment: str, data: bytes, resource: float
    ) -> CheckpointRef:
        """Write ``data`` atomically and return a reference with its size and sha256.

        The bytes go to a hidden temporary file in the same directory that is
        then renamed over the key, so readers never see a half-written file.
        Writing the same key again (a retried segment) replaces it.
        """
        key = make_key(experiment, trial_id, segment)
        path = self._path(key)
        parent = path.rsplit("/", 1)[0]
        tmp = f"{parent}/.{segment}.{uuid.uuid4().hex}.tmp"
        data = bytes(data)
        try:
            self.fs.makedirs(parent, exist_ok=True)
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                if self.fs.exists(tmp):
                    self.fs.rm(tmp)
            if isinstance(exc, OSError):
                raise self._unavailable(f"cannot store {key}", exc) from exc
            raise
        return CheckpointRef(
            key=key,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            trial_id=trial_id,
            resource=float(resource),
        )

    def get(self, ref: CheckpointRef) -> bytes:
        """Read a checkpoint and verify it against ``ref``.

        Raises:
            ValueError: ``ref.key`` is not a safe key (e.g. tampered with in the log).
            CheckpointError: the file is missing, or its size or sha256 differs.
        """
        experiment, trial_id, _ = split_key(ref.key)
        where = f"experiment {experiment!r} trial {trial_id!r} key {ref.key!r}"
        try:
            data = self.fs.cat_file(self._path(ref.key))
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint for {where} is missing from {self.url}") from None
        except OSError as exc:
            raise self._unavailable(f"cannot read {ref.key}", exc) from exc
        if len(data) != ref.size:
            raise CheckpointError(
                f"checkpoint for {where} has {len(data)} bytes, but the log recorded {ref.size}"
            )
        digest = hashlib.sha256(data).hexdigest()
        if digest != ref.sha256:
            raise CheckpointError(
                f"checkpoint for {where} has sha256 {digest}, but the log recorded {ref.sha256}"
            )
        return bytes(data)

    def exists(self, key: str) -> bool:
        """Whether a checkpoint is stored under ``key``."""
        return bool(self.fs.exists(self._path(key)))

    def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error."""
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(path)

    def _files(self, experiment: str) -> dict[str, int]:
        base = f"{self.root}/{validate_name('experiment', experiment)}"
        if not self.fs.exists(base):
            return {}
        found: dict[str, Any] = self.fs.find(base, detail=True)
        files: dict[str, int] = {}
        prefix = self.root.rstrip("/") + "/"
        for path, info in found.items():
            rel = str(path)
            # memory:// returns paths with a leading "/", local ones without scheme.
            for candidate in (prefix, prefix.lstrip("/")):
                if rel.startswith(candidate):
                    rel = rel[len(candidate) :]
                    break
            rel = rel.lstrip("/")
            try:
                split_key(rel)
            except ValueError:
                continue  # temporaries and foreign files are not checkpoints
            files[rel] = int(info.get("size") or 0)
        return files

    def keys(self, experiment: str) -> list[str]:
        """Sorted keys of every checkpoint of ``experiment``."""
        return sorted(self._files(experiment))

    def disk_usage(self, experiment: str) -> int:
        """Total bytes of ``experiment``'s checkpoints."""
        return sum(self._files(experiment).values())

    def usage(self, experiment: str) -> tuple[int, int]:
        """``(bytes, files)`` of ``experiment``'s checkpoints, from one listing."""
        files = self._files(experiment)
        return sum(files.values()), len(files)

    def retain(
        self,
        experiment: str,
        keep: Iterable[str],
        keep_last: int = 2,
        per_trial: Mapping[str, list[str]] | None = None,
    ) -> list[str]:
        """Delete checkpoints that no policy keeps; return the deleted keys.

        A checkpoint survives if it is in ``keep`` (e.g. the scheduler's
        ``live_checkpoints()``, which includes PBT donors) or among the newest
        ``keep_last`` of its trial. "Newest" follows ``per_trial[trial_id]``
        (keys or segment names, oldest first) when given; stored keys missing
        from that list count as older than all listed ones. Otherwise it
        follows the segment's ``stop``, ``start`` and ``seq`` parsed from its
        ``"start-stop"`` or ``"start-stop.s<seq>"`` name; a checkpoint whose
        name does not parse is kept, since its age is unknown.

        Args:
            experiment: Experiment whose checkpoints to prune.
            keep: Keys that must never be deleted.
            keep_last: How many of each trial's newest checkpoints to keep.
            per_trial: Optional explicit order per trial id.
        """
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 0:
            raise ValueError(f"keep_last is {keep_last!r}, but must be an integer >= 0")
        keep_set = set(keep)
        by_trial: dict[str, list[str]] = {}
        for key in self.keys(experiment):
            by_trial.setdefault(split_key(key)[1], []).append(key)
        deleted: list[str] = []
        for trial_id, keys in by_trial.items():
            ordered = self._ordered(experiment, trial_id, keys, per_trial)
            newest = set(ordered[len(ordered) - keep_last :]) if keep_last else set()
            for key in ordered:
                if key not in keep_set and key not in newest:
                    self.delete(key)
                    deleted.append(key)
        return sorted(deleted)

    @staticmethod
    def _ordered(
        experiment: str,
        trial_id: str,
        keys: list[str],
        per_trial: Mapping[str, list[str]] | None,
    ) -> list[str]:
        """``keys`` oldest first; unorderable keys are left out (and so kept)."""
        if per_trial is not None and trial_id in per_trial:
            listed = [
                entry
                if "/" in entry
                else make_key(experiment, trial_id, entry.removesuffix(SUFFIX))
                for entry in per_trial[trial_id]
            ]
            present = set(keys)
            order = [k for k in dict.fromkeys(listed) if k in present]
            return sorted(present - set(order)) + order
        parsed = [(o, k) for k in keys if (o := _segment_order(k)) is not None]
        return [k for _, k in sorted(parsed)]
