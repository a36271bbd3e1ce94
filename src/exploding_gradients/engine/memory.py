"""Memory guard: refuse, before any compute, a configuration the machine cannot hold.

Each experiment declares a *conservative* (rounded-up) estimate of the peak memory one
seed needs on top of the running Python process (``memory=`` of
:func:`.registry.experiment`: bytes per value and the number of values of each term,
such as ``parameters``, ``activations``, ``data`` and ``results``; the estimates and
what they count are documented beside each experiment).  :func:`check_memory` adds the
:data:`RUNTIME` torch allocates on a first forward and backward pass, multiplies by
:data:`SAFETY` for allocator slack, compares the total with the memory available and
raises :class:`~.params.ConfigError` with the estimate if it does not fit, so a
too-large configuration is refused up front instead of being killed by the kernel's
out-of-memory killer half way through (or swapping the machine to a halt).  Seeds run
one after another, so they do not add up.
"""

from __future__ import annotations

import os
from pathlib import Path

from .params import ConfigError, short_repr
from .registry import Experiment

LIMIT_ENV_VAR = "EXPLODING_GRADIENTS_MEMORY_LIMIT"
SAFETY = 1.25          # allocator slack and temporaries no estimate lists
ROW_BYTES = 2048       # one result row: dict, DataFrame, list and JSON text of the cache
RUNTIME = 256 * 2**20  # bytes torch allocates on a first forward/backward (pools, kernels)
GIB = 2**30


def estimate_terms(exp: Experiment, config: dict) -> dict[str, int]:
    """:func:`estimate_bytes` broken down into its terms (bytes, before :data:`SAFETY`)."""
    if exp.memory is None:
        return {}
    size, terms = exp.memory(config)
    return {"runtime": RUNTIME, **{term: size * values for term, values in terms.items()}}


def estimate_bytes(exp: Experiment, config: dict) -> int:
    """Conservative peak memory, in bytes, of one seed of experiment ``exp``.

    ``config`` is a *resolved* configuration (every parameter present and valid).  An
    experiment that declares no estimate (registered by other code) is estimated at 0,
    so it is never refused.
    """
    return int(SAFETY * sum(estimate_terms(exp, config).values()))


def available_bytes() -> tuple[int | None, str]:
    """Memory this process may still use, in bytes, and where that number comes from.

    ``$EXPLODING_GRADIENTS_MEMORY_LIMIT`` (bytes) if set, else ``MemAvailable`` from
    ``/proc/meminfo`` (Linux), else the physical memory from ``os.sysconf`` (macOS);
    ``None`` if none of these is known.
    """
    override = os.environ.get(LIMIT_ENV_VAR, "").strip()
    if override:
        if not override.isascii() or not override.isdigit() or len(override) > 30:
            raise ConfigError(f"environment variable {LIMIT_ENV_VAR}: got "
                              f"{short_repr(override)}; allowed: a whole number of bytes")
        return int(override), f"available (the limit set by {LIMIT_ENV_VAR})"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "available (MemAvailable in /proc/meminfo)"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return (os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"),
                "of physical memory")
    except (OSError, ValueError, AttributeError):
        return None, "unknown"


def _gib(n: int) -> str:
    return f"{n / GIB:.3g} GiB" if n >= GIB / 100 else f"{n / 2**20:.3g} MiB"


def check_memory(exp: Experiment, config: dict) -> int:
    """Raise :class:`ConfigError` if one seed of ``exp`` would not fit in memory.

    Returns the estimate (bytes) when it fits.  The message gives the estimate, its
    largest terms, the memory available and the parameters that set the size.
    """
    need = estimate_bytes(exp, config)
    have, source = available_bytes()
    if have is None or need <= have:
        return need
    terms = sorted(estimate_terms(exp, config).items(), key=lambda kv: -kv[1])
    detail = ", ".join(f"{term} {_gib(size)}" for term, size in terms if size)
    sizes = [k for k in ("depth", "width", "batch_size", "n_train", "hessian_samples",
                         "seq_len", "hidden_size", "steps") if k in config]
    raise ConfigError(
        f"experiment {exp.name!r} needs about {_gib(need)} of memory for this configuration "
        f"({detail}; x{SAFETY} for allocator slack), this machine has {_gib(have)} "
        f"{source}; reduce {', '.join(sizes)}"
        + ("" if not sizes else f" (now {', '.join(f'{k}={config[k]}' for k in sizes)})")
    )
