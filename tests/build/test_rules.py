"""Make rules of the book: each page depends on the package files it can run."""

import json

from exploding_gradients.build import rules
from exploding_gradients.engine import deps

PKG = deps.PACKAGE


def names(paths):
    return sorted(path.relative_to(deps.PACKAGE_DIR).as_posix() for path in paths)


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
    assert "experiments/recurrent.py" in names(rules.notebook_files(rnn))
    files = names(rules.notebook_files(mlp))
    assert "experiments/recurrent.py" not in files and "__init__.py" not in files
    assert {"experiments/feedforward.py", "build/bookbuild.py", "chapters/__init__.py",
            "engine/params.py"} <= set(files)


def test_a_module_pulls_in_the_experiments_it_names(tmp_path):
    """Code runs experiments by name, which no import shows (the remedy matrix names
    "rnn_training" in its table of causes): the rules follow the names, so editing an
    experiment re-executes the pages that run it."""
    nb = notebook(tmp_path, "page", "from exploding_gradients.study import remedy_matrix")
    files = names(rules.notebook_files(nb))
    assert {"study/remedy_matrix.py", "experiments/recurrent.py"} <= set(files)


def test_notebook_depends_on_the_modules_it_imports_or_reaches(tmp_path):
    nb = notebook(tmp_path, "imports",
                  "from exploding_gradients.study import growth\n"
                  "from exploding_gradients import GradientMonitor",
                  "import exploding_gradients as eg\neg.theory.chi1('relu', 1.0, 0.0)")
    used = {f"{PKG}.{name}" for name in ("study", "study.growth", "monitor", "theory")}
    assert rules.notebook_files(nb) == rules.closure({*rules.ALWAYS, *used})


def test_make_rule_and_a_cell_that_is_not_python(tmp_path, monkeypatch):
    monkeypatch.chdir(deps.PACKAGE_DIR.parents[1])
    nb = notebook(tmp_path, "odd", "x = (")
    rule = rules.make_rule(nb)
    target, files = rule.split(": ")
    assert target == "book/generated/odd.ipynb"
    # unsure what it uses: the page depends on every module
    assert f"src/{PKG}/experiments/recurrent.py" in files.split()
    assert f"src/{PKG}/__init__.py" in files
