"""Results cached on disk by a hash of (experiment, resolved config, seed, its code version).

Each entry is one JSON file holding the table and a SHA-256 checksum of it.  Writes go
to a temporary file in the same folder and are renamed into place, so a reader sees a
whole entry or none.  An entry that fails to parse or whose checksum disagrees is
reported, deleted and recomputed - never trusted.  No pickles: loading a cache entry
cannot run code.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import pandas as pd
import torch

from . import __version__

ENV_VAR = "EXPLODING_GRADIENTS_CACHE"


def cache_dir() -> Path:
    """``$EXPLODING_GRADIENTS_CACHE``, else ``~/.cache/exploding-gradients``."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "exploding-gradients"
    return Path(os.environ.get(ENV_VAR) or default)


@functools.cache
def code_version() -> str:
    """Package version plus a hash of every source file: the version of the whole package."""
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


@functools.cache
def experiment_code_version(experiment: str) -> str:
    """Version of the code ``experiment`` runs: its module and that module's imports.

    See :mod:`.deps`: editing a module outside the closure keeps the cached results.  An
    experiment whose function is not defined in the package (a test's stub) gets
    :func:`code_version`.  Computed once per process, on the experiment's first run.
    """
    # Imported here: the package imports this module before registering any experiment,
    # and `python -m exploding_gradients.deps` must not find deps already imported.
    from . import REGISTRY, deps

    exp = REGISTRY.get(experiment)
    module = getattr(exp.func, "__module__", None) if exp else None
    if module is None or deps.module_file(module) is None:
        return code_version()
    return deps.code_version(module)


def entry_key(experiment: str, config: dict, seed: int) -> str:
    """Hash of everything that determines a result bit for bit.

    The thread count is part of it: torch's parallel reductions sum in a different order
    with a different number of threads, which changes the last bits of the results.
    """
    blob = json.dumps({"experiment": experiment, "config": config, "seed": seed,
                       "code": experiment_code_version(experiment),
                       "threads": torch.get_num_threads()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _payload(df: pd.DataFrame) -> dict:
    return {"columns": list(df.columns), "dtypes": {c: str(t) for c, t in df.dtypes.items()},
            "data": {c: df[c].tolist() for c in df.columns}}


def _checksum(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def load(key: str) -> pd.DataFrame | None:
    """The cached table for ``key``, or ``None`` if absent or corrupted."""
    path = cache_dir() / f"{key}.json"
    try:
        entry = json.loads(path.read_text())
        payload = entry["table"]
        if entry["checksum"] != _checksum(payload):
            raise ValueError("checksum mismatch")
        df = pd.DataFrame(payload["data"], columns=payload["columns"])
        return df.astype(payload["dtypes"]) if len(df) else df
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as err:
        warnings.warn(f"cache entry {path} is corrupted ({err}); recomputing", stacklevel=2)
        path.unlink(missing_ok=True)
        return None


def store(key: str, df: pd.DataFrame, meta: dict) -> None:
    """Write the entry atomically: temporary file, fsync, rename."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    payload = _payload(df)
    entry = {"meta": meta, "checksum": _checksum(payload), "table": payload}
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{key[:16]}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(entry, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / f"{key}.json")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
