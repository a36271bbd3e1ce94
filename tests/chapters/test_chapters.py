"""The chapter machinery: one spec per chapter, its notebook's parameters cell generated
from it, and a notebook's parameters validated without side effects."""

import json
from pathlib import Path

import nbformat
import pytest
from papermill.translators import PythonTranslator

from exploding_gradients import chapters
from exploding_gradients.engine.backends import check_backend
from exploding_gradients.engine.params import ConfigError

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_every_notebook_is_a_chapter_in_the_books_order():
    assert sorted(nb.stem for nb in NOTEBOOKS) == sorted(chapters.NAMES)
    toc = (ROOT / "_toc.yml").read_text()
    order = [name for name in chapters.NAMES if f"book/generated/{name}" in toc]
    positions = [toc.index(f"book/generated/{name}\n") for name in order]
    assert order == list(chapters.NAMES) and positions == sorted(positions)


@pytest.mark.parametrize("name", chapters.NAMES)
def test_the_parameters_cell_is_the_chapters_spec(name):
    """``python -m exploding_gradients.chapters sync`` writes it; nothing else may."""
    cell = chapters.parameter_cell_of(ROOT / "notebooks" / f"{name}.ipynb")
    assert cell == chapters.get(name).parameter_cell()


@pytest.mark.parametrize("name", chapters.NAMES)
def test_papermill_lists_every_parameter(name):
    """``papermill --help-notebook`` shows what its own parser reads from the cell."""
    spec = chapters.get(name)
    cell = nbformat.v4.new_code_cell(spec.parameter_cell())
    assert [p.name for p in PythonTranslator.inspect(cell)] == [p.name for p in spec.all_params]


@pytest.mark.parametrize("name", chapters.NAMES)
def test_profiles_fill_exactly_the_profile_parameters(name):
    spec = chapters.get(name)
    from_profile = {p.name for p in spec.params if p.default is None}
    assert set(spec.profiles) == set(chapters.PROFILES)
    for profile, values in spec.profiles.items():
        assert set(values) == from_profile, (profile, set(values) ^ from_profile)
        params = spec.parameters({"profile": profile}, before={})
        assert all(value is not None for key, value in params.items() if key != "scheduler")


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_source_notebooks_are_stripped_and_parameterized(nb):
    notebook = nbformat.read(nb, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1
    assert notebook.metadata["kernelspec"]["name"] == "python3"


def test_parameters_are_readable_as_attributes_and_carry_the_chapter():
    params = chapters.get("depth").parameters({"profile": "quick"}, before={})
    assert params.depth == params["depth"] == 12 and params.chapter == "depth"
    assert list(params.table()["parameter"][:3]) == ["profile", "backend", "scheduler"]
    with pytest.raises(AttributeError, match="no parameter 'dpeth'"):
        params.dpeth  # noqa: B018


def test_validating_parameters_sets_no_backend():
    before = check_backend()
    chapters.get("depth").parameters({"backend": "local"}, before={})
    assert check_backend() == before


def test_every_name_a_parameter_cell_binds_is_checked():
    """What the notebook's cells bound since the snapshot: new names, rebound names
    (``theory = 1`` over an imported module), names that look private."""
    import math

    namespace = {"math": math, "In": ["", "x = 1"], "Out": {}}
    before = chapters.names_before(namespace)
    namespace.update(_i1="x = 1", _i="x = 1", _="", __annotations__={"depth": int},
                     depth=3)
    assert chapters.given_names(namespace, before) == {"depth": 3}
    for name, value in [("math", 1), ("_depth", 10), ("_i1", "forged"), ("_", 5),
                        ("__annotations__", 1)]:
        given = {**namespace, name: value}
        assert name in chapters.given_names(given, before), name
    spec = chapters.get("depth")
    with pytest.raises(ConfigError, match="unknown parameter.*'math'"):
        spec.parameters({**namespace, "math": 1}, before)


def test_sync_rewrites_a_drifted_cell(tmp_path):
    for nb in NOTEBOOKS:
        (tmp_path / nb.name).write_text(nb.read_text())
    path = tmp_path / "depth.ipynb"
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        if "parameters" in cell["metadata"].get("tags", []):
            cell["source"] = "depth: int = 7"
    path.write_text(json.dumps(notebook))
    assert chapters.sync(tmp_path) == ["depth"]
    assert chapters.parameter_cell_of(path) == chapters.get("depth").parameter_cell()
    assert chapters.sync(tmp_path) == []


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_page_is_prose_and_a_few_visible_calls(nb):
    """At most 150 lines of code, and every call that measures (eg.run, eg.sweep and the
    study functions that run experiments, or the ledger that reads them) in a cell the
    reader sees."""
    import re

    cells = [c for c in nbformat.read(nb, as_version=4).cells if c.cell_type == "code"]
    lines = sum(1 for c in cells for line in c.source.splitlines() if line.strip())
    assert lines <= 150, f"{nb.name}: {lines} lines of code"
    measures = re.compile(r"\beg\.(run|sweep)\(|\b(run_matrix|step_cost|time_ratios|"
                          r"sweep_speedup|benchmark_ensemble|benchmark_monitoring|"
                          r"clip_directions|ledger)\(")
    hidden = {"remove-cell", "remove-input"}
    for cell in cells:
        if measures.search(cell.source):
            assert not hidden & set(cell.metadata.get("tags", [])), cell.source[:200]
    assert any(measures.search(c.source) for c in cells)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_page_opened_alone_installs_its_package_from_the_books_repository(nb):
    """The launch buttons open a source notebook without the package (Colab): its first
    code cell installs it from the repository _config.yml names, and only if missing."""
    import re

    url = re.search(r"^repository:\n  url: (\S+)", (ROOT / "_config.yml").read_text(), re.M)
    first = next(c for c in nbformat.read(nb, as_version=4).cells if c.cell_type == "code")
    assert 'find_spec("exploding_gradients") is None' in first.source
    assert f"git+{url.group(1)}" in first.source
    assert "remove-cell" in first.metadata.get("tags", [])


def test_parameters_survive_pickling_and_copying():
    import copy
    import pickle

    P = chapters.Params("depth", {"seeds": 3})
    for again in (pickle.loads(pickle.dumps(P)), copy.deepcopy(P)):
        assert again == P and again.seeds == 3 and again.chapter == "depth"
        with pytest.raises(AttributeError, match="no parameter 'steps'"):
            again.steps  # noqa: B018
