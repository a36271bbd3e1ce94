"""Command line: ``python -m exploding_gradients list | run NAME ...`` (alias ``xgrad``)."""

from __future__ import annotations

import argparse
import json
import sys
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
    try:
        seeds = _seeds(args.seeds)
        exp = get(args.name)
        config = exp.resolve(parse_assignments(args.set))  # fail before any compute
        where = check_backend(args.backend, args.scheduler, args.workers)
        if args.out.exists() and not args.out.is_dir():
            raise ConfigError(f"--out {str(args.out)!r} exists and is not a folder")
        table = run(args.name, config, seeds=seeds, use_cache=not args.no_cache,
                    backend=where.name, scheduler=where.scheduler, workers=where.workers)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"error: {args.name!r} ran out of memory; try smaller sizes", file=sys.stderr)
        return 1
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out / "results.csv", index=False)
        (args.out / "config.json").write_text(json.dumps(
            {"experiment": args.name, "seeds": seeds, "config": config}, indent=2) + "\n")
    except OSError as err:
        print(f"error: cannot write the results to {str(args.out)!r}: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(table)} rows to {args.out / 'results.csv'}")
    return 0


def _seeds(text: str) -> int:
    """``--seeds``: plain ASCII digits (no "１２", "²", "1e3" or 5000-digit numbers)."""
    value = text.strip()
    seeds = int(value) if value.isascii() and value.isdigit() and len(value) <= 6 else text
    check_seeds(seeds)  # a string that is not such a number is refused here too
    return seeds
