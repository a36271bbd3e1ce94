"""Results cached on disk by a hash of (experiment, resolved config, seed, code version).

Each entry is one JSON file holding the table and a SHA-256 checksum of it.  Writes go
to a temporary file in the same folder and are renamed into place, so a reader sees a
whole entry or none; temporaries left by a killed writer are removed once they are an
hour old.  An entry that is not a whole, plain, valid entry (truncated, checksum
mismatch, too large, too deeply nested, an unknown dtype, a folder, symlink or FIFO in
its place) is reported, removed where possible and recomputed: never trusted, never a
crash.  No pickles: loading an entry cannot run code.

A cache folder that cannot be written (read-only, disk full) is not an error: results
are computed and returned as usual, with one warning that they were not cached.  A
cache path that exists but is not a folder is refused before any compute
(:func:`check_folder`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

from .params import ConfigError

ENV_VAR = "EXPLODING_GRADIENTS_CACHE"
#: Largest entry read (bytes): the biggest table of the book is a few MB.
MAX_ENTRY_BYTES = 1 << 30
#: The dtypes :func:`store` writes; anything else in an entry is refused.
DTYPES = ("int64", "float64", "bool", "str", "object")
#: A temporary file older than this (seconds) belongs to a writer that was killed.
STALE_SECONDS = 3600


class CorruptEntry(ValueError):
    """A cache entry that is not a whole, valid entry."""


def cache_dir() -> Path:
    """``$EXPLODING_GRADIENTS_CACHE``, else ``~/.cache/exploding-gradients``."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "exploding-gradients"
    return Path(os.environ.get(ENV_VAR) or default)


def check_folder() -> Path:
    """The cache folder, refused with a :class:`ConfigError` naming the setting if the
    path exists and is not a folder (a regular file, say)."""
    folder = cache_dir()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"environment variable {ENV_VAR}: {str(folder)!r} exists and is not "
                          "a folder; allowed: a folder (created if missing) for the results "
                          "cache")
    return folder


def entry_key(experiment: str, config: dict, seed: int, code_version: str) -> str:
    """Hash of everything that determines a result bit for bit.

    ``code_version`` is the version of the code the experiment runs (see
    :func:`.deps.code_version`).  The thread count is part of the key: torch's parallel
    reductions sum in a different order with a different number of threads, which
    changes the last bits of the results.
    """
    blob = json.dumps({"experiment": experiment, "config": config, "seed": seed,
                       "code": code_version, "threads": torch.get_num_threads()},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _payload(df: pd.DataFrame) -> dict:
    return {"columns": list(df.columns), "dtypes": {c: str(t) for c, t in df.dtypes.items()},
            "data": {c: df[c].tolist() for c in df.columns}}


def _checksum(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _read_regular_file(path: Path) -> bytes:
    """The bytes of ``path`` if it is a regular file (not a symlink, folder or FIFO) of at
    most :data:`MAX_ENTRY_BYTES`; raises FileNotFoundError or :class:`CorruptEntry`."""
    try:
        # O_NONBLOCK: a FIFO opens at once instead of waiting for a writer; O_NOFOLLOW:
        # a symlink (or a loop of them) is refused, not followed.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise
    except OSError as err:
        raise CorruptEntry(f"cannot be opened as a file ({err.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CorruptEntry("not a regular file")
        if info.st_size > MAX_ENTRY_BYTES:
            raise CorruptEntry(f"{info.st_size} bytes, more than {MAX_ENTRY_BYTES}")
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_ENTRY_BYTES:
                raise CorruptEntry(f"more than {MAX_ENTRY_BYTES} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _table(entry: object) -> pd.DataFrame:
    """The table of a parsed entry, every part of it checked."""
    if not isinstance(entry, dict) or not isinstance(entry.get("table"), dict):
        raise CorruptEntry("not an entry")
    payload = entry["table"]
    if entry.get("checksum") != _checksum(payload):
        raise CorruptEntry("checksum mismatch")
    columns, dtypes, data = (payload.get(k) for k in ("columns", "dtypes", "data"))
    if not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)
            and isinstance(dtypes, dict) and isinstance(data, dict)
            and set(dtypes) == set(columns) == set(data)
            and all(isinstance(v, list) for v in data.values())
            and len({len(v) for v in data.values()}) <= 1):
        raise CorruptEntry("malformed table")
    unknown = {t for t in dtypes.values() if t not in DTYPES}
    if unknown:
        raise CorruptEntry(f"unknown dtype(s) {sorted(map(str, unknown))}")
    for column in columns:
        # missing values of a string column are None or NaN
        expected = (str, float, type(None)) if dtypes[column] in ("str", "object") \
            else (bool, int, float)
        if not all(isinstance(v, expected) for v in data[column]):
            raise CorruptEntry(f"column {column!r} holds values of the wrong type")
    df = pd.DataFrame(data, columns=columns)
    return df.astype(dtypes) if len(df) else df


def load(key: str) -> pd.DataFrame | None:
    """The cached table for ``key``, or ``None`` if absent or not a valid entry."""
    path = cache_dir() / f"{key}.json"
    try:
        entry = json.loads(_read_regular_file(path))
        return _table(entry)
    except FileNotFoundError:
        return None
    except (CorruptEntry, ValueError, TypeError, KeyError, RecursionError) as err:
        reason = str(err) if isinstance(err, CorruptEntry) else type(err).__name__
        _discard(path, reason)
        return None


def _discard(path: Path, reason: str) -> None:
    """Report an unreadable entry and remove it if the folder allows."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        done = "removed; recomputing"
    except OSError as err:
        done = f"could not be removed ({err.strerror}); recomputing"
    warnings.warn(f"cache entry {path} is not valid ({reason}): {done}", stacklevel=3)


_unwritable_warned: set[str] = set()
_swept: set[str] = set()


def store(key: str, df: pd.DataFrame, meta: dict) -> bool:
    """Write the entry atomically (temporary file, fsync, rename); True if written.

    A folder that cannot be written is reported once per process and the result is
    simply not cached (False): a read-only or full cache never loses a computed result.
    """
    folder = cache_dir()
    payload = _payload(df)
    entry = {"meta": meta, "checksum": _checksum(payload), "table": payload}
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _sweep_stale(folder)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{key[:16]}-", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(entry, fh, allow_nan=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / f"{key}.json")
        return True
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if str(folder) not in _unwritable_warned:
            _unwritable_warned.add(str(folder))
            what = {errno.EROFS: "read-only", errno.EACCES: "not writable",
                    errno.ENOSPC: "full"}.get(err.errno, err.strerror)
            warnings.warn(f"results cache {folder} is {what}: results are computed but not "
                          f"cached (set {ENV_VAR} to a writable folder)", stacklevel=2)
        return False
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def _sweep_stale(folder: Path) -> None:
    """Remove temporaries of killed writers (older than :data:`STALE_SECONDS`), once per
    folder and process."""
    if str(folder) in _swept:
        return
    _swept.add(str(folder))
    now = time.time()
    for tmp in folder.glob(".*.tmp"):
        try:
            if now - tmp.lstat().st_mtime > STALE_SECONDS:
                tmp.unlink()
        except OSError:
            pass

