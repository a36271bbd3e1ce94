"""The import closure of a module, and the per-experiment code versions of cache keys."""

import shutil

import pytest

import exploding_gradients as eg
from exploding_gradients.engine import cache, deps

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


def test_closure_of_the_real_recurrent_experiments():
    files = {p.relative_to(deps.PACKAGE_DIR).as_posix()
             for p in deps.closure([f"{PKG}.experiments.recurrent"])}
    assert {"experiments/recurrent.py", "models/rnn.py", "train.py",
            "engine/params.py"} <= files
    assert "experiments/curvature.py" not in files and "__init__.py" not in files


def test_subpackage_inits_import_none_of_their_own_modules():
    """A subpackage __init__ that imported its modules would put all of them in the
    closure of any one of them (the top-level __init__ is never followed).  Only the
    chapters' __init__ imports anything: the chapter machinery, not the chapters."""
    for init in deps.PACKAGE_DIR.glob("*/__init__.py"):
        module = f"{PKG}.{init.parent.name}"
        inside = {n for n in deps.imported_names(init, module) if deps.module_file(n)}
        own = {n for n in inside if n.startswith(module + ".")}
        assert not own, f"{init} imports {own}"
        if init.parent.name != "chapters":
            assert not inside, f"{init} imports {inside}"


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A copy of the package that the code versions hash instead of the real one."""
    folder = tmp_path / PKG
    shutil.copytree(deps.PACKAGE_DIR, folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(deps, "PACKAGE_DIR", folder)
    deps.cached_code_version.cache_clear()
    yield folder
    deps.cached_code_version.cache_clear()


def key(experiment):
    deps.cached_code_version.cache_clear()  # a new process would see the edit
    return cache.entry_key(experiment, {"depth": 3}, 0, eg.REGISTRY[experiment].code_version)


def test_cache_key_changes_only_with_code_in_the_experiments_closure(package_copy):
    rnn, mlp = key("rnn_gradients"), key("signal_propagation")
    with open(package_copy / "experiments" / "curvature.py", "a") as fh:  # outside both
        fh.write("# edited\n")
    assert (key("rnn_gradients"), key("signal_propagation")) == (rnn, mlp)
    with open(package_copy / "models" / "rnn.py", "a") as fh:  # the rnn experiments' model
        fh.write("# edited\n")
    assert key("rnn_gradients") != rnn and key("signal_propagation") == mlp
    with open(package_copy / "monitor.py", "a") as fh:  # imported by both
        fh.write("# edited\n")
    assert key("signal_propagation") != mlp


def test_an_experiment_defined_outside_the_package_hashes_its_own_file(tmp_path):
    source = tmp_path / "mine.py"
    source.write_text("def f(config, seed):\n    return None\n")
    namespace = {}
    exec(compile(source.read_text(), str(source), "exec"), namespace)
    func = namespace["f"]
    func.__module__ = "mine"
    before = deps.function_version(func)
    source.write_text("def f(config, seed):\n    return 1\n")
    assert deps.function_version(func) != before
