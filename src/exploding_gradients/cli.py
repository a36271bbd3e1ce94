"""Command line: ``python -m exploding_gradients list | run NAME ...`` (alias ``xgrad``).

``run`` writes ``results.csv`` and ``config.json`` into ``--out`` as one unit: both are
written into a fresh folder beside it, which then takes ``--out``'s place in one atomic
exchange of names, so ``--out`` holds one whole run, the previous one or the new one,
whenever the process is killed or the disk fills.  ``--out`` must therefore be a new
folder or one holding only those two files.  Ctrl-C ends a run with a message (exit 130);
rerunning the same command resumes from the results cache.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

from .engine.backends import check_backend
from .engine.params import ConfigError, parse_assignments
from .engine.registry import REGISTRY, get
from .engine.runner import check_seeds, run


def _list() -> str:
    lines = []
    for exp in REGISTRY.values():
        lines.append(f"{exp.name}: {exp.description}")
        for p in exp.params:
            lines.append(f"    {p.name:<14} default {p.default!r:<18} allowed: {p.allowed()}")
            if p.help:
                lines.append(f"    {'':<14} {p.help}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="exploding_gradients", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print every experiment with its parameters")
    run_p = sub.add_parser("run", help="run one experiment and write results.csv + config.json")
    run_p.add_argument("name", help="experiment name (see 'list')")
    run_p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a parameter; repeatable")
    run_p.add_argument("--seeds", default="1", help="number of seeds, 0 .. N-1 (default 1)")
    run_p.add_argument("--out", required=True, type=Path, help="output folder")
    run_p.add_argument("--no-cache", action="store_true", help="recompute, ignore the cache")
    run_p.add_argument("--backend", default="serial", metavar="{serial,local,dask}",
                       help="where the seeds run: this process (default), local worker "
                       "processes or a dask cluster (one torch thread per worker: the "
                       "results of a serial run with OMP_NUM_THREADS=1)")
    run_p.add_argument("--scheduler", metavar="ADDRESS",
                       help="dask scheduler address, e.g. tcp://host:8786 (default: start "
                       "a local dask cluster)")
    run_p.add_argument("--workers", metavar="N",
                       help="worker processes of 'local' or of the local dask cluster "
                       "(default: one per CPU core)")
    args = parser.parse_args(argv)

    if args.command == "list":
        print(_list())
        return 0
    with warnings.catch_warnings():  # a warning is a message to the user, not a traceback
        warnings.showwarning = _show_warning
        return _run(args)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    try:
        seeds = _seeds(args.seeds)
        exp = get(args.name)
        config = exp.resolve(parse_assignments(args.set))  # fail before any compute
        where = check_backend(args.backend, args.scheduler, args.workers)
        check_out(args.out)
        table = run(args.name, config, seeds=seeds, use_cache=not args.no_cache,
                    backend=where.name, scheduler=where.scheduler, workers=where.workers)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"error: {args.name!r} ran out of memory; try smaller sizes", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the seeds computed so far are in the results cache; rerun the "
              "same command to resume", file=sys.stderr)
        return 130
    try:
        write_run(args.out, table, {"experiment": args.name, "seeds": seeds,
                                    "config": config})
    except OSError as err:
        print(f"error: cannot write the results to {str(args.out)!r} ({err.strerror}); it "
              "still holds what it held before", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted while writing: {str(args.out)!r} still holds what it held "
              "before; rerun the same command (the results are cached)", file=sys.stderr)
        return 130
    print(f"wrote {len(table)} rows to {args.out / 'results.csv'}")
    return 0


OUT_FILES = ("config.json", "results.csv")


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that is not a folder, or one holding files other than a
    previous run's (they would be replaced along with it)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} exists and is not a folder")
    if out.is_dir():
        others = sorted(p.name for p in out.iterdir() if p.name not in OUT_FILES)
        if others:
            raise ConfigError(
                f"--out {str(out)!r} holds other files ({', '.join(others[:5])}"
                f"{', ...' if len(others) > 5 else ''}); allowed: a new or empty folder, or "
                f"one holding only {' and '.join(OUT_FILES)} of an earlier run")


def write_run(out: Path, table, meta: dict) -> None:
    """Write ``results.csv`` and ``config.json`` into ``out`` as one unit (see above)."""
    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    fresh = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.new-"))
    try:
        table.to_csv(fresh / "results.csv", index=False)
        (fresh / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        for name in OUT_FILES:
            with open(fresh / name, "rb") as fh:
                os.fsync(fh.fileno())
        if out.exists():
            _exchange(fresh, out)  # fresh now holds the previous run
        else:
            os.rename(fresh, out)
            return
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    shutil.rmtree(fresh, ignore_errors=True)


def _remove_stale(out: Path, age: float = 3600.0) -> None:
    """Remove the folders a killed earlier write left beside ``out`` (an hour old)."""
    now = time.time()
    for stale in out.parent.glob(f".{out.name}.[no][el][wd]-*"):
        try:
            if now - stale.lstat().st_mtime > age and not stale.is_symlink():
                shutil.rmtree(stale)
        except OSError:
            pass


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> None:
    """Swap the names of two folders in one atomic step (Linux ``renameat2``); elsewhere
    in two renames (an interruption between them leaves ``b`` briefly missing)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                     _RENAME_EXCHANGE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS):  # not a file system without it
            raise OSError(code, os.strerror(code), str(b))
    backup = Path(tempfile.mkdtemp(dir=b.parent, prefix=f".{b.name}.old-"))
    os.rename(b, backup / "run")
    os.rename(a, b)
    os.rename(backup / "run", a)
    backup.rmdir()


def _seeds(text: str) -> int:
    """``--seeds``: plain ASCII digits (no "１２", "²", "1e3" or 5000-digit numbers)."""
    value = text.strip()
    seeds = int(value) if value.isascii() and value.isdigit() and len(value) <= 6 else text
    check_seeds(seeds)  # a string that is not such a number is refused here too
    return seeds
