import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The ledger reads every other page's numbers: it is executed last, as the Makefile does.
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"),
                   key=lambda p: (p.stem == "claims", p.stem))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own empty results cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("EXPLODING_GRADIENTS_CACHE", str(folder))
    return folder


@dataclass(frozen=True)
class BookBuild:
    root: Path          # the copy of the book sources, notebooks executed
    returncode: int     # of ``jupyter-book build -W``
    output: str         # its stdout and stderr

    @property
    def html(self) -> Path:
        return self.root / "_build" / "html"


@pytest.fixture(scope="session")
def book_tree(tmp_path_factory):
    """A copy of the book sources with every notebook executed in the quick profile.

    Built once per session (the slow part of the suite); it has its own results cache,
    independent of the per-test ``isolated_cache``.
    """
    from exploding_gradients.build.bookbuild import execute

    root = tmp_path_factory.mktemp("book")
    for name in ["_config.yml", "_toc.yml"]:
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "book", root / "book", ignore=shutil.ignore_patterns("generated"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXPLODING_GRADIENTS_CACHE", str(tmp_path_factory.mktemp("book-cache")))
        mp.setenv("EXPLODING_GRADIENTS_STAMP", "0")  # figures comparable across code versions
        mp.setenv("OMP_NUM_THREADS", "1")  # as make sets: the results of a book build
        for nb in NOTEBOOKS:
            execute(nb, root / "book" / "generated" / nb.name, profile="quick")
    return root


@pytest.fixture(scope="session")
def book_build(book_tree):
    """``jupyter-book build -W`` of ``book_tree``, run once per session."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "jupyter-book"), "build", str(book_tree), "-W"],
        capture_output=True, text=True)
    return BookBuild(book_tree, result.returncode, result.stdout + result.stderr)


@pytest.fixture(scope="session")
def built_book(book_build):
    """The built ``_build/html`` folder; fails the test if the build failed."""
    if book_build.returncode != 0:
        pytest.fail("jupyter-book build -W failed:\n" + book_build.output[-3000:])
    return book_build.html


@pytest.fixture
def spy_experiment(monkeypatch):
    """``spy(name)``: replace experiment ``name``'s function with one that records the
    seeds it is asked for (and returns None), keeping the code version, hence the cache
    keys, of the real one; returns the list of recorded seeds."""
    import dataclasses

    import exploding_gradients as eg

    def spy(name):
        calls = []
        original = eg.REGISTRY[name]

        def record(config, seed):
            calls.append(seed)

        record.__module__ = original.func.__module__
        monkeypatch.setitem(eg.REGISTRY, name, dataclasses.replace(original, func=record))
        return calls

    return spy
