"""Which of the package's modules a piece of code depends on, read from its imports.

Two users.  The results cache keys an experiment by a hash of the modules its function
can run (:func:`code_version`), so editing ``recurrence.py`` recomputes the ``rnn_*``
experiments only.  The Makefile re-executes a chapter only when a module it uses
changed: ``python -m exploding_gradients.deps notebooks/NAME.ipynb`` prints the rule
``book/generated/NAME.ipynb: <package files>``.

A module depends on itself and, transitively, on every package module it imports
(``from . import x``, ``from .x import y``, ``import exploding_gradients.x``, also inside
functions), found with :mod:`ast` without importing anything.  The package's own
``__init__.py`` is left out: it imports every module to register their experiments, so
following it would make everything depend on everything.  Imports that ``ast`` cannot
see (``importlib``, ``__import__``) are not followed.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path

from . import __version__

PACKAGE = __package__  # not __name__: that is "__main__" under python -m
PACKAGE_DIR = Path(__file__).resolve().parent
#: Every chapter runs these: papermill's driver and the parameter handling.
ALWAYS = tuple(f"{PACKAGE}.{name}" for name in ("bookbuild", "chapters", "config"))


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


def _reexports() -> dict[str, str]:
    """Names the package's ``__init__.py`` re-exports (``eg.run``), mapped to their module."""
    tree = ast.parse((PACKAGE_DIR / "__init__.py").read_bytes())
    return {alias.asname or alias.name: f"{PACKAGE}.{node.module}"
            for node in tree.body if isinstance(node, ast.ImportFrom) and node.level == 1
            and node.module for alias in node.names}


def _code_cells(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text())["cells"]
    sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
               for c in cells if c["cell_type"] == "code"]
    # IPython magics and shell escapes are not Python; the rest of the cell still is.
    return [re.sub(r"(?m)^\s*[%!].*$", "", source) for source in sources]


def notebook_modules(notebook: Path) -> set[str] | None:
    """Package modules ``notebook`` uses, ``None`` if a code cell is not valid Python.

    Those defining an experiment it names (any string literal that is a key of
    :data:`REGISTRY`, as in ``eg.run("training", ...)``), those it imports from the
    package, those it reaches as ``eg.<name>``, and :data:`ALWAYS`.
    """
    from . import REGISTRY  # the whole package: every experiment registered

    reexports = _reexports()

    def resolve(name: str) -> str | None:
        full = f"{PACKAGE}.{name}"
        return full if module_file(full) else reexports.get(name)

    modules, aliases, attributes = set(ALWAYS), set(), set()
    for source in _code_cells(notebook):
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return None
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and node.value in REGISTRY:
                modules.add(REGISTRY[node.value].func.__module__)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == PACKAGE:
                        modules.add(alias.name)
                        if alias.name == PACKAGE or not alias.asname:  # binds the package
                            aliases.add(alias.asname or PACKAGE)
            elif isinstance(node, ast.ImportFrom) and node.module \
                    and node.module.split(".")[0] == PACKAGE:
                modules.add(node.module)
                modules.update(f"{node.module}.{alias.name}" for alias in node.names)
                if node.module == PACKAGE:
                    modules.update(resolve(alias.name) for alias in node.names)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                attributes.add((node.value.id, node.attr))
    # Resolved last: ast.walk does not visit an import before the uses of its name.
    modules.update(resolve(attr) for name, attr in attributes if name in aliases)
    modules.discard(None)
    return modules


def notebook_files(notebook: Path) -> list[Path]:
    """Source files the executed ``notebook`` depends on; every one if unsure."""
    modules = notebook_modules(notebook)
    if modules is None:
        return sorted(PACKAGE_DIR.rglob("*.py"))
    return closure(modules)


def make_rule(notebook: Path, target_dir: Path = Path("book/generated")) -> str:
    """``TARGET_DIR/NAME.ipynb: <files>``, paths relative to the working directory if inside."""
    def shown(path: Path) -> str:
        return str(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)

    files = " ".join(shown(path) for path in notebook_files(notebook))
    return f"{target_dir / notebook.name}: {files}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", type=Path, nargs="+")
    parser.add_argument("--target-dir", type=Path, default=Path("book/generated"))
    args = parser.parse_args(argv)
    for notebook in args.notebooks:
        print(make_rule(notebook, args.target_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
