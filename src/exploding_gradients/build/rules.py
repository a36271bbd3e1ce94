"""Make rules of the book: which package files each executed page depends on.

``python -m exploding_gradients.build.rules notebooks/NAME.ipynb`` prints
``book/generated/NAME.ipynb: <package files>``, so that ``make book`` re-executes a page
only when code it can run changed.  A page depends on the package modules its code
cells import or reach as ``eg.<name>``, on :data:`ALWAYS`, and transitively on what
those import (:mod:`..engine.deps`) and on the module of every experiment they name in a
string literal (``eg.run("training", ...)`` runs ``experiments/feedforward.py`` without
importing it).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
from pathlib import Path

from .._version import __version__
from ..engine.deps import PACKAGE, PACKAGE_DIR, imported_names, module_file

#: Every page runs these: papermill's driver, the chapter machinery, the figure style.
ALWAYS = tuple(f"{PACKAGE}.{name}" for name in ("build.bookbuild", "chapters", "study.plots"))


def _experiment_modules() -> dict[str, str]:
    from .. import REGISTRY  # the whole package: every experiment registered

    return {name: exp.func.__module__ for name, exp in REGISTRY.items()}


def _named_experiments(tree: ast.AST, experiments: dict[str, str]) -> set[str]:
    return {experiments[node.value] for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.value in experiments}


def closure(modules: set[str]) -> list[Path]:
    """Source files of ``modules`` and of every package module they import or whose
    experiments they name, transitively."""
    experiments = _experiment_modules()
    todo, files = list(modules), {}
    while todo:
        name = todo.pop()
        if name in files:
            continue
        files[name] = path = module_file(name)
        if path is not None:
            todo.extend(imported_names(path, name))
            todo.extend(_named_experiments(ast.parse(path.read_bytes()), experiments))
    return sorted(path for path in files.values() if path is not None)


def code_version(modules: set[str]) -> str:
    """Package version plus a hash of :func:`closure` of ``modules``: the version of the
    code a page can run (stamped on its figures)."""
    digest = hashlib.sha256(__version__.encode())
    for path in closure(modules):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0")
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
    """Package modules ``notebook`` uses directly, ``None`` if a code cell is not valid
    Python: those it imports from the package, those it reaches as ``eg.<name>``, those
    defining an experiment it names, and :data:`ALWAYS`."""
    reexports, experiments = _reexports(), _experiment_modules()

    def resolve(name: str) -> str | None:
        full = f"{PACKAGE}.{name}"
        return full if module_file(full) else reexports.get(name)

    modules, aliases, attributes = set(ALWAYS), set(), set()
    for source in _code_cells(notebook):
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return None
        modules |= _named_experiments(tree, experiments)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
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
