"""Every benchmark of the project in one run on this machine, printed as ratios.

``make benchmark`` (or ``python benchmarks/run.py --profile quick`` for a fast check):

* batched vs looped seeds: a 20-layer width-64 MLP, 16 seeds, against the bare ensemble
  (stacked matrix products and SGD, nothing else) and the machine's matmul peak, and the
  engine sampling only the first and last step (``study.timing.benchmark_ensemble``);
* parallel vs serial sweep: 8 training runs on one worker process per core vs one
  process (``backend="local"`` vs ``"serial"``), worker start-up not counted;
* monitoring on vs off: a training step with and without the loop's monitoring, at
  width 64 and 256, split into its per-step and per-sample parts
  (``study.timing.benchmark_monitoring``), and a sampled step's part split into the
  monitor's hooks, its reductions and the update ratio (``study.timing.monitoring_parts``);
* warm and incremental vs cold book build (``build_time.measure_builds``).

The record is written to ``benchmarks/latest.json`` (not versioned: it describes this
machine), which the book's "Scaling up" page shows when it exists.  Timings, not tests:
nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_time import measure_builds  # noqa: E402

from exploding_gradients.study import timing  # noqa: E402

RECORD = Path(__file__).resolve().parent / "latest.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default", choices=("quick", "default", "full"))
    profile = parser.parse_args().profile
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    quick = profile == "quick"
    record = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}, torch {torch.__version__}",
        "batched_seeds": timing.benchmark_ensemble(steps=20 if quick else 100,
                                                   seeds=4 if quick else 16),
        "parallel_sweep": timing.sweep_speedup(jobs=2 if quick else 8,
                                               steps=20 if quick else 200),
        # short runs, many rounds: each round's variants then run close together in time
        "monitoring": timing.benchmark_monitoring(depth=20, width=64, steps=20 if quick else 50,
                                                  repeat=3 if quick else 40),
        "monitoring_parts": timing.monitoring_parts(depth=20, width=64,
                                                    rounds=3 if quick else 20),
        "monitoring_wide": timing.benchmark_monitoring(depth=20, width=256,
                                                       steps=20 if quick else 50,
                                                       repeat=3 if quick else 20),
        "book": measure_builds(profile),
    }
    print(f"machine: {record['machine']}  commit {record['commit']}  profile {profile}")
    for label, value in timing.record_rows(record):
        print(f"{label + ':':<58}{value:8.3f}")
    RECORD.write_text(json.dumps(record, indent=1, default=float))
    print(f"record written to {RECORD}")


if __name__ == "__main__":
    main()
