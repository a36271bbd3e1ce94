"""Per-module dependencies: the import closure, notebook make rules, per-experiment cache keys."""

import json
import shutil

import pytest

from exploding_gradients import cache, deps

PKG = deps.PACKAGE


def write_package(root, files):
    folder = root / PKG
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def names(paths):
    return sorted(path.name for path in paths)


def test_closure_follows_intra_package_imports_only(tmp_path):
    folder = write_package(tmp_path, {
        "__init__.py": "from . import a, b, c, d, e\n",
        "a.py": "import os\nfrom . import b\n\ndef f():\n    from .c import x\n",
        "b.py": f"from {PKG}.d import y\nfrom . import __version__\n",
        "c.py": "x = 1\n",
        "d.py": "from .b import z  # a cycle\n",
        "e.py": "from .a import f\n",
    })
    assert names(deps.closure([f"{PKG}.a"], folder)) == ["a.py", "b.py", "c.py", "d.py"]
    assert names(deps.closure([f"{PKG}.c"], folder)) == ["c.py"]


def test_closure_of_the_real_recurrence_module():
    files = names(deps.closure([f"{PKG}.recurrence"]))
    assert {"recurrence.py", "experiments.py", "train.py", "config.py"} <= set(files)
    assert "curvature.py" not in files and "__init__.py" not in files


def notebook(tmp_path, name, *cells):
    path = tmp_path / f"{name}.ipynb"
    path.write_text(json.dumps({"cells": [
        {"cell_type": "code", "source": source.splitlines(keepends=True), "metadata": {},
         "outputs": [], "execution_count": None} for source in cells]}))
    return path


def test_notebook_depends_on_the_modules_of_the_experiments_it_runs(tmp_path):
    rnn = notebook(tmp_path, "rnn", "import exploding_gradients as eg",
                   'df = eg.sweep("rnn_gradients", [{}], seeds=1)')
    mlp = notebook(tmp_path, "mlp", "%matplotlib inline\nimport exploding_gradients as eg",
                   'df = eg.run("signal_propagation", seeds=1)')
    assert "recurrence.py" in names(deps.notebook_files(rnn))
    files = names(deps.notebook_files(mlp))
    assert "recurrence.py" not in files and "__init__.py" not in files
    assert {"experiments.py", "bookbuild.py", "chapters.py", "config.py"} <= set(files)


def test_notebook_depends_on_the_modules_it_imports_or_reaches(tmp_path):
    nb = notebook(tmp_path, "imports", "from exploding_gradients import analysis, GradientMonitor",
                  "import exploding_gradients as eg\neg.theory.chi1('relu', 1.0, 0.0)")
    used = [f"{PKG}.{name}" for name in ("analysis", "monitor", "theory")]
    assert deps.notebook_files(nb) == deps.closure([*deps.ALWAYS, *used])


def test_make_rule_and_a_cell_that_is_not_python(tmp_path, monkeypatch):
    monkeypatch.chdir(deps.PACKAGE_DIR.parents[1])
    nb = notebook(tmp_path, "odd", "x = (")
    rule = deps.make_rule(nb)
    target, files = rule.split(": ")
    assert target == "book/generated/odd.ipynb"
    # unsure what it uses: the page depends on every module
    assert f"src/{PKG}/recurrence.py" in files.split() and f"src/{PKG}/__init__.py" in files


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A copy of the package that the cache hashes instead of the real one."""
    folder = tmp_path / PKG
    shutil.copytree(deps.PACKAGE_DIR, folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(deps, "PACKAGE_DIR", folder)
    cache.experiment_code_version.cache_clear()
    yield folder
    cache.experiment_code_version.cache_clear()


def key(experiment):
    cache.experiment_code_version.cache_clear()  # a new process would see the edit
    return cache.entry_key(experiment, {"depth": 3}, 0)


def test_cache_key_changes_only_with_code_in_the_experiments_closure(package_copy):
    rnn, mlp = key("rnn_gradients"), key("signal_propagation")
    with open(package_copy / "curvature.py", "a") as fh:   # outside both closures
        fh.write("# edited\n")
    assert (key("rnn_gradients"), key("signal_propagation")) == (rnn, mlp)
    with open(package_copy / "recurrence.py", "a") as fh:  # the rnn experiments' module
        fh.write("# edited\n")
    assert key("rnn_gradients") != rnn and key("signal_propagation") == mlp
    with open(package_copy / "train.py", "a") as fh:       # imported by both
        fh.write("# edited\n")
    assert key("signal_propagation") != mlp


def test_an_experiment_defined_outside_the_package_uses_the_whole_package_version():
    assert cache.experiment_code_version("no such experiment") == cache.code_version()
