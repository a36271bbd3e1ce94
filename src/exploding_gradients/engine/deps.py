"""Which of the package's modules a piece of code depends on, read from its imports.

Two users.  The results cache keys an experiment by a hash of the modules its function
can run (:func:`code_version`), so editing ``experiments/recurrent.py`` recomputes the
``rnn_*`` experiments only.  The Makefile re-executes a chapter only when a module it
uses changed (:mod:`exploding_gradients.build.rules`).

A module depends on itself and, transitively, on every package module it imports
(``from . import x``, ``from .x import y``, ``import exploding_gradients.x``, also inside
functions), found with :mod:`ast` without importing anything.  The package's own
``__init__.py`` is left out: it imports every module to register their experiments, so
following it would make everything depend on everything.  Imports that ``ast`` cannot
see (``importlib``, ``__import__``) are not followed.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
from collections.abc import Iterable
from pathlib import Path

from .._version import __version__

PACKAGE = __package__.rpartition(".")[0]  # "exploding_gradients"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def module_file(module: str, package_dir: Path | None = None) -> Path | None:
    """Source file of ``module`` (a dotted name) if it is a module of the package.

    ``None`` outside the package and for the package itself (its ``__init__.py``).
    """
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) == 1:
        return None
    base = (package_dir or PACKAGE_DIR).joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_names(path: Path, module: str) -> set[str]:
    """Dotted names ``path`` (the source of ``module``) imports, anywhere in the file.

    ``from .a import b`` yields ``pkg.a`` and ``pkg.a.b``: ``b`` may be a submodule;
    names that are not modules are dropped by :func:`closure`.
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def closure(modules: Iterable[str], package_dir: Path | None = None) -> list[Path]:
    """Sorted source files of ``modules`` and of every package module they import."""
    todo, files = list(modules), {}
    while todo:
        name = todo.pop()
        if name not in files:
            files[name] = path = module_file(name, package_dir)
            if path is not None:
                todo.extend(imported_names(path, name))
    return sorted(path for path in files.values() if path is not None)


def code_version(module: str, package_dir: Path | None = None) -> str:
    """Package version plus a hash of ``module``'s closure: the code it can run."""
    root = package_dir or PACKAGE_DIR
    digest = hashlib.sha256(__version__.encode())
    for path in closure([module], root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return f"{__version__}+{digest.hexdigest()[:12]}"


@functools.cache
def cached_code_version(module: str) -> str:
    """:func:`code_version` of ``module`` in the installed package, computed once per
    process (a run's cache keys must not change while it runs)."""
    return code_version(module)


@functools.cache
def package_version() -> str:
    """Package version plus a hash of every source file of the package."""
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return f"{__version__}+{digest.hexdigest()[:12]}"


def function_version(func) -> str:
    """The code version of an experiment function: the closure of its module inside the
    package, or, for a function defined elsewhere (a user's own experiment), the whole
    package plus the source of the file that defines it."""
    module = getattr(func, "__module__", None) or ""
    if module_file(module) is not None:
        return cached_code_version(module)
    digest = hashlib.sha256(package_version().encode())
    try:
        digest.update(Path(inspect.getsourcefile(func)).read_bytes())
    except (TypeError, OSError):  # built in, or defined interactively: no file to hash
        pass
    return f"{__version__}+{digest.hexdigest()[:12]}"
