"""One module per computed chapter, holding its parameters, measurements, tables and figures.

Each ``chapters/<name>.py`` declares ``CHAPTER``, a :class:`Chapter`: its parameters
(shared ones declared once in :mod:`._shared`) and its profiles (``quick`` for tests,
seconds; ``default``, the published book, minutes on two cores; ``full``, a bigger
machine).  ``notebooks/<name>.ipynb`` is the page: prose, a parameters cell generated
from the spec (``python -m exploding_gradients.chapters sync`` rewrites it; a test checks
it), and a few calls into the module, the measurements' calls visible to the reader.

A notebook starts like this (its parameters cell, then papermill's injected one, between
the first two cells)::

    from exploding_gradients.chapters import depth as chapter, names_before
    _kernel = names_before(globals())
    ...                                   # parameters cell, injected parameters
    P = chapter.CHAPTER.parameters(globals(), _kernel)

:meth:`Chapter.parameters` fills the ``None`` values from the profile, validates
everything, and refuses every name the parameter cells bound that the chapter does not
declare, whatever it looks like (``-p dept 60``, ``-p _depth 10``, ``-p theory 1``):
papermill itself only warns about those.  It sets nothing: the notebook calls
``eg.set_backend(P.backend, P.scheduler)`` itself.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..engine.backends import BACKENDS, check_backend
from ..engine.params import ConfigError, Param, resolve, short_repr

PROFILES = ("quick", "default", "full")
#: Every chapter, in the book's order.
NAMES = (
    "depth",
    "initialization",
    "activation",
    "learning_rate",
    "normalization",
    "recurrence",
    "precision",
    "causes",
    "clipping",
    "architecture",
    "optimization",
    "spikes",
    "matrix",
    "monitoring",
    "convnets",
    "transformers",
    "claims",
    "scaling",
)

#: Accepted by every chapter, declared first in every parameters cell.
COMMON = (
    Param(
        "profile", "str", "default", "quick (seconds), default (the book) or full", choices=PROFILES
    ),
    Param(
        "backend",
        "str",
        "serial",
        "where the experiments run: serial, local (worker processes) or dask",
        choices=BACKENDS,
    ),
    Param(
        "scheduler",
        "str",
        None,
        "dask scheduler address, e.g. tcp://host:8786; None: a local dask cluster",
        optional=True,
    ),
)


class Params(dict):
    """A chapter's validated parameters: a dict, also readable as attributes (``P.depth``)."""

    def __init__(self, chapter: str, values: dict):
        super().__init__(values)
        self.chapter = chapter

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:  # ``chapter`` read from __dict__: unset while unpickling
            chapter = self.__dict__.get("chapter", "?")
            raise AttributeError(f"chapter {chapter!r} has no parameter {name!r}") from None

    @property
    def code_version(self) -> str:
        """Version of the code this chapter can run (stamped on its figures)."""
        from ..build.rules import code_version

        return code_version({f"{__name__}.{self.chapter}"})

    def table(self) -> pd.DataFrame:
        """The parameters actually used, for display at the top of a chapter."""
        return pd.DataFrame({"parameter": list(self), "value": [str(v) for v in self.values()]})


@dataclass(frozen=True)
class Chapter:
    name: str
    params: tuple[Param, ...]
    profiles: dict[str, dict[str, Any]]

    @property
    def all_params(self) -> tuple[Param, ...]:
        return COMMON + self.params

    def parameters(self, namespace: dict, before: dict[str, int]) -> Params:
        """The chapter's validated parameters from a notebook's global namespace.

        ``before`` is :func:`names_before` of the namespace as it was before the
        parameter cells ran: every name those cells bound or rebound is a given
        parameter, and must be one the chapter declares.
        """
        given = given_names(namespace, before)
        resolved = resolve(self.all_params, given, f"notebook {self.name!r}")
        backend = check_backend(resolved["backend"], resolved["scheduler"])
        resolved["scheduler"] = backend.scheduler
        for key, value in self.profiles[resolved["profile"]].items():
            if resolved[key] is None:
                resolved[key] = value
        return Params(self.name, resolved)

    def parameter_cell(self) -> str:
        """The source of the notebook's parameters cell (what papermill reads)."""
        from_profile = set(self.profiles["default"])
        lines = []
        for p in self.all_params:  # p.kind ("int", "list[float]") is a valid annotation
            note = p.help + ("; None: from the profile" if p.name in from_profile else "")
            lines.append(f"{p.name}: {p.kind} = {_literal(p.default)}  # {note}")
        return "\n".join(lines)


def _literal(value: Any) -> str:
    """``value`` as Python source, strings in double quotes."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(_literal, value)) + "]"
    return repr(value)


_IPYTHON_CACHE = re.compile(r"_(i{1,3}|i\d+|\d+|_{0,2})")


def names_before(namespace: dict) -> dict[str, int]:
    """Identity of every name bound in ``namespace`` now (call it before the parameters).

    In IPython it also registers :class:`InjectedCellCheck`, which refuses papermill's
    injected cell before it runs if it binds a name the chapter does not declare: that
    name may be one the checking cell itself needs (``chapter``, ``_kernel``), which the
    later check could then not reach.
    """
    shell = namespace.get("get_ipython", lambda: None)()
    if shell is not None and not any(isinstance(t, InjectedCellCheck)
                                     for t in shell.ast_transformers):
        chapter = next((v for v in namespace.values() if isinstance(getattr(v, "CHAPTER", None),
                                                                     Chapter)), None)
        if chapter is not None:
            shell.ast_transformers.append(InjectedCellCheck(chapter.CHAPTER))
    return {name: id(value) for name, value in namespace.items()}


class UnknownParameterError(ConfigError):
    """An injected parameter the chapter does not declare, refused before its cell runs."""


try:  # IPython rejects a cell whose transformer raises InputRejected, before running it
    from IPython.core.error import InputRejected

    class InjectedParameterError(UnknownParameterError, InputRejected):
        """:class:`UnknownParameterError` as IPython rejects an input cell."""
except ImportError:  # pragma: no cover - outside IPython nothing injects cells
    InjectedParameterError = UnknownParameterError


class InjectedCellCheck(ast.NodeTransformer):
    """An IPython AST transformer: a cell made only of assignments of literal values to
    names (what papermill injects) may bind only declared parameters."""

    def __init__(self, chapter: Chapter):
        self.known = {p.name for p in chapter.all_params}
        self.name = chapter.name

    def visit_Module(self, node: ast.Module) -> ast.Module:
        def literal(value: ast.AST) -> bool:  # papermill writes float('nan') for a NaN
            return not any(isinstance(n, ast.Attribute) or
                           (isinstance(n, ast.Name) and n.id != "float")
                           for n in ast.walk(value))

        names = [s.targets[0].id for s in node.body if isinstance(s, ast.Assign)
                 and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)
                 and literal(s.value)]
        if node.body and len(names) == len(node.body):
            unknown = [n for n in names if n not in self.known]
            if unknown:
                raise InjectedParameterError(
                    f"notebook {self.name!r}: unknown parameter(s) "
                    f"{', '.join(map(repr, unknown))}; known parameters: "
                    f"{', '.join(sorted(self.known))}")
        return node


def given_names(namespace: dict, before: dict[str, int]) -> dict[str, Any]:
    """The names bound or rebound in ``namespace`` since ``before`` was taken, except the
    snapshot itself, IPython's own input and output caches (``_i3``, ``_``, ...) and the
    ``__annotations__`` that the parameters cell's annotations create, each checked to
    hold what IPython or Python put there, so a parameter named like one is not missed.
    """
    inputs, outputs = namespace.get("In", []), namespace.get("Out", {})

    def ipython_cache(name: str, value: Any) -> bool:
        if not _IPYTHON_CACHE.fullmatch(name):
            return False
        if name.startswith("_i"):
            index = name[2:]
            return (
                value in inputs
                if not index.isdigit()
                else (int(index) < len(inputs) and inputs[int(index)] == value)
            )
        if name.strip("_").isdigit():
            return outputs.get(int(name.strip("_"))) is value
        return value == "" or any(value is out for out in outputs.values())

    def python_own(name: str, value: Any) -> bool:  # annotated assignments make this one
        return (name == "__annotations__" and isinstance(value, dict)
                and all(isinstance(key, str) for key in value))

    return {name: value for name, value in namespace.items()
            if before.get(name) != id(value) and value is not before
            and not ipython_cache(name, value) and not python_own(name, value)}


def get(name: str) -> Chapter:
    """The :class:`Chapter` called ``name`` (its module imported on first use)."""
    if name not in NAMES:
        raise ConfigError(f"unknown chapter {short_repr(name)}; known: {', '.join(NAMES)}")
    return importlib.import_module(f"{__name__}.{name}").CHAPTER


# --------------------------------------------------------------------------- notebooks


def parameter_cell_of(notebook: Path) -> str | None:
    """The source of the cell tagged ``parameters`` in ``notebook`` (None if none)."""
    for cell in json.loads(notebook.read_text())["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            source = cell["source"]
            return "".join(source) if isinstance(source, list) else source
    return None


def sync(folder: Path) -> list[str]:
    """Rewrite the parameters cell of every chapter notebook in ``folder`` from its spec;
    returns the names of the notebooks changed."""
    import nbformat

    changed = []
    for name in NAMES:
        path = folder / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        if len(cells) != 1:
            raise ValueError(f"{path}: expected one cell tagged 'parameters', found {len(cells)}")
        source = get(name).parameter_cell()
        if cells[0].source != source:
            cells[0].source = source
            nbformat.write(nb, path)
            changed.append(name)
    return changed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["sync"] or len(argv) > 2:
        print(
            "usage: python -m exploding_gradients.chapters sync [NOTEBOOK_FOLDER]", file=sys.stderr
        )
        return 2
    folder = Path(argv[1] if len(argv) > 1 else "notebooks")
    changed = sync(folder)
    print(
        f"rewrote the parameters cell of {', '.join(changed)}"
        if changed
        else "every parameters cell already matches its chapter's spec"
    )
    return 0
