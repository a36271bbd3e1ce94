"""Adversarial inputs: every parameter of every experiment and chapter, through Python,
the command line and papermill, gets a clear ConfigError naming it or a correct result.

Never another exception (nothing from deep inside torch), never a traceback on the
command line, never a half-written or unloadable cache entry.
"""

import contextlib
import dataclasses
import datetime
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import exploding_gradients as eg
from exploding_gradients import chapters
from exploding_gradients.chapters import PROFILES
from exploding_gradients.cli import main
from exploding_gradients.engine import cache
from exploding_gradients.engine.params import ConfigError, Param

ROOT = Path(__file__).resolve().parents[1]
FAST = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

ADVERSARIAL_TEXT = [
    "", " ", "\t\n", "1e3", " 12 ", "0x10", "0o7", "0b1", "nan", "NaN", "inf", "-inf",
    "Infinity", "2024-01-01", "2024-01-01T00:00:00", "１２", "²", "٣", "1_000", "1,000",
    "-0", "-0.0", "+5", "1e308", "1e309", "-1e309", "1e-400", "9" * 400, "9" * 5000,
    "true", "True", "yes", "on", "None", "null", "~", "[1, 2]", "[]", "[[1]]", "1,2,3",
    "relu ", " tanh", "RELU", "relu\x00", "ｒｅｌｕ", "🔥", "a" * 10_000, "{'a': 1}",
    "__import__('os')",
]


def numbers_() -> st.SearchStrategy:
    return st.one_of(
        st.integers(), st.integers(-(10**40), 10**40), st.sampled_from([10**30, 10**400,
                                                                        -(10**400), 2**53 + 1]),
        st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324]),
        st.fractions(), st.decimals(allow_nan=True),
        st.integers(-(2**63), 2**63 - 1).map(np.int64), st.floats(width=32).map(np.float32),
        st.sampled_from([np.bool_(True), np.float64("nan"), complex(1, 2)]),
    )


def adversarial() -> st.SearchStrategy:
    scalar = st.one_of(
        numbers_(), st.booleans(), st.none(), st.text(), st.text(st.characters(
            categories=["Nd", "No", "Zs"]), max_size=4), st.sampled_from(ADVERSARIAL_TEXT),
        st.from_regex(r"\A\s?[+-]?[0-9]{0,4}(\.[0-9]{0,3})?([eE][+-]?[0-9]{1,3})?\s?\Z"),
        st.dates(), st.datetimes(), st.binary(max_size=4),
    )
    return st.one_of(scalar, st.lists(scalar, max_size=4), st.tuples(scalar),
                     st.dictionaries(st.text(max_size=3), scalar, max_size=2),
                     st.frozensets(st.integers(), max_size=2))


def _valid_scalar(p: Param, kind: str, v) -> bool:
    if kind == "bool":
        return type(v) is bool
    if kind == "str":
        return type(v) is str and v == v.strip() and v != "" and (
            p.choices is None or v in p.choices)
    if kind == "int" and type(v) is not int:
        return False
    if kind == "float" and (type(v) is not float or not math.isfinite(v)
                            or math.copysign(1.0, v) < 0 and v == 0):
        return False
    return (p.low is None or v >= p.low) and (p.high is None or v <= p.high) and (
        p.choices is None or v in p.choices)


def satisfies(p: Param, v) -> bool:
    """``v`` is a value ``p`` declares: right Python type, within bounds and choices."""
    if v is None:
        return p.optional
    if p.kind.startswith("list["):
        return type(v) is list and len(v) > 0 and all(
            _valid_scalar(p, p.kind[5:-1], x) for x in v)
    return _valid_scalar(p, p.kind, v)


def valid_strings(p: Param) -> st.SearchStrategy:
    """Text a user could type that *is* valid, to reach the success path too."""
    if p.choices is not None:
        return st.sampled_from([str(c) for c in p.choices])
    if p.kind == "bool":
        return st.sampled_from(["true", "false", "yes", "no", "1", "0"])
    low, high = p.low if p.low is not None else -1e6, p.high if p.high is not None else 1e6
    if p.kind.startswith("list"):
        return st.lists(st.floats(low, high), min_size=1, max_size=3).map(
            lambda xs: ",".join(repr(x) for x in xs))
    if p.kind == "int":
        return st.integers(int(low), int(high)).map(str)
    return st.floats(low, high).map(repr)


EXP_PARAMS = [(name, p) for name, exp in eg.REGISTRY.items() for p in exp.params]
CHAPTERS = {name: chapters.get(name) for name in chapters.NAMES}
CHAPTER_PARAMS = [(name, p) for name, ch in CHAPTERS.items() for p in ch.params]


def notebook_parameters(chapter: str, given: dict) -> dict:
    """What the chapter's notebook makes of the names ``given`` bound by its cells."""
    return CHAPTERS[chapter].parameters(given, before={})


def test_every_experiment_is_fuzzed():
    assert {"signal_propagation", "training", "sharpness", "lr_boundary", "rnn_gradients",
            "rnn_training"} <= {name for name, _ in EXP_PARAMS}


def _named(err: ConfigError, name: str) -> bool:
    return repr(name) in str(err)


@FAST
@given(target=st.sampled_from(EXP_PARAMS), value=adversarial())
def test_experiment_resolve_returns_valid_config_or_names_the_parameter(target, value):
    name, p = target
    exp = eg.REGISTRY[name]
    try:
        config = exp.resolve({p.name: value})
    except ConfigError as err:
        assert _named(err, p.name), str(err)
        assert "allowed" in str(err) and len(str(err)) < 2000
        return
    for q in exp.params:
        assert satisfies(q, config[q.name]), (q.name, config[q.name])
    assert exp.resolve(config) == config  # validating twice changes nothing
    json.dumps(config, allow_nan=False)   # a valid config is a valid cache key


@FAST
@given(target=st.sampled_from(EXP_PARAMS), data=st.data())
def test_valid_text_is_accepted(target, data):
    """Valid text for a parameter is accepted, unless it is refused in combination with the
    defaults of the others (loss_scaling needs half precision, cuda needs a GPU), and then
    the message names the parameter."""
    name, p = target
    text = data.draw(valid_strings(p))
    try:
        config = eg.REGISTRY[name].resolve({p.name: text})
    except ConfigError as err:
        assert _named(err, p.name) and "allowed" in str(err), str(err)
        return
    assert satisfies(p, config[p.name])


@FAST
@given(target=st.sampled_from(CHAPTER_PARAMS), value=adversarial())
def test_notebook_parameters_valid_or_named(target, value):
    chapter, p = target
    try:
        params = notebook_parameters(chapter, {p.name: value})
    except ConfigError as err:
        assert _named(err, p.name), str(err)
        return
    assert satisfies(p, params[p.name]) or (value is None and p.optional)
    assert params["profile"] == "default"


@settings(max_examples=100, deadline=None, derandomize=True)
@given(profile=adversarial(), name=st.text(min_size=1, max_size=8))
def test_notebook_profile_and_unknown_names(profile, name):
    try:
        params = notebook_parameters("depth", {"profile": profile})
        assert params["profile"] in PROFILES
    except ConfigError as err:
        assert _named(err, "profile")
    known = {p.name for p in CHAPTERS["depth"].all_params}
    if name in known:
        return
    with pytest.raises(ConfigError, match="unknown parameter"):  # "_x", "_", "In", ...
        notebook_parameters("depth", {name: 1})


@FAST
@given(overrides=st.dictionaries(st.one_of(st.text(max_size=6), st.integers(), st.none()),
                                 adversarial(), max_size=4))
def test_many_parameters_at_once(overrides):
    with contextlib.suppress(ConfigError):
        eg.REGISTRY["training"].resolve(overrides)


# --------------------------------------------------------------------------- the CLI

TINY = dict(depth=2, width=4, steps=1, seq_len=2, hidden_size=3, batch_size=4, n_train=8,
            d_in=3, hessian_samples=8, power_iters=2, log_every=1, measure_every=1)
SIZES = set(TINY) | {"d_out", "input_size"}


def tiny(name: str) -> dict:
    from exploding_gradients.experiments.feedforward import APPLIES_TO

    known = {p.name for p in eg.REGISTRY[name].params}
    if "architecture" in known:  # the default mlp: not the other families' parameters
        known -= {k for k, archs in APPLIES_TO.items() if "mlp" not in archs}
    return {k: v for k, v in TINY.items() if k in known}


@contextlib.contextmanager
def fresh_cache():
    """A new empty cache per hypothesis example (function fixtures are shared)."""
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        folder = Path(tmp) / "cache"
        mp.setenv(cache.ENV_VAR, str(folder))
        yield Path(tmp), folder


def assert_cache_whole(folder: Path) -> None:
    """Only complete, checksummed, loadable JSON entries; no temporary files."""
    if not folder.exists():
        return
    for path in folder.iterdir():
        assert re.fullmatch(r"[0-9a-f]{64}\.json", path.name), path.name
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert isinstance(cache.load(path.stem), pd.DataFrame)


def cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def check_cli_outcome(code, out, err, tmp: Path, key: str) -> None:
    assert "Traceback" not in out + err
    assert code in (0, 2), (code, err)
    event(f"exit code {code}")
    if code == 2:
        assert err.startswith("error:") and len(err) < 3000, err
        assert key in err or "seeds" in err or "--set" in err, err
        assert not (tmp / "out").exists(), "a refused run must write nothing"
    else:
        assert (tmp / "out" / "results.csv").exists() and not err


def stub(config: dict, seed: int) -> pd.DataFrame:
    return pd.DataFrame({"x": [float(seed), 1.5], "config": [json.dumps(config)] * 2})


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(target=st.sampled_from(EXP_PARAMS), data=st.data(),
       seeds=st.one_of(st.sampled_from(["1", "2", " 3 "]), st.integers(-3, 3).map(str),
                       st.sampled_from(
           ["", " 2 ", "１２", "²", "1e3", "2.0", "nan", "9" * 5000, "0x2", "-1"]), st.text()))
def test_cli_validation_with_a_stub_experiment(target, data, seeds):
    """Every parameter, any text: exit 2 with 'error: ...' or 0 with a whole cache."""
    name, p = target
    value = data.draw(st.one_of(st.text(), st.sampled_from(ADVERSARIAL_TEXT),
                                valid_strings(p)))
    with fresh_cache() as (tmp, folder), pytest.MonkeyPatch.context() as mp:
        mp.setitem(eg.REGISTRY, name, dataclasses.replace(eg.REGISTRY[name], func=stub))
        sets = [f"--set={k}={v}" for k, v in tiny(name).items() if k != p.name]
        code, out, err = cli(["run", name, *sets, f"--set={p.name}={value}",
                              f"--seeds={seeds}", f"--out={tmp / 'out'}"])
        check_cli_outcome(code, out, err, tmp, p.name)
        assert_cache_whole(folder)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(target=st.sampled_from([t for t in EXP_PARAMS if t[1].name not in SIZES]),
       data=st.data())
def test_cli_end_to_end_real_runs(target, data):
    """Real compute on tiny networks, one non-size parameter fuzzed at a time."""
    name, p = target
    value = data.draw(st.one_of(valid_strings(p), valid_strings(p), st.sampled_from(
        ADVERSARIAL_TEXT[:30])))
    with fresh_cache() as (tmp, folder), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # diverging runs: overflow in numpy
        sets = [f"--set={k}={v}" for k, v in tiny(name).items()]
        code, out, err = cli(["run", name, *sets, f"--set={p.name}={value}", "--seeds=1",
                              f"--out={tmp / 'out'}"])
        check_cli_outcome(code, out, err, tmp, p.name)
        assert_cache_whole(folder)
        if code == 0:
            assert len(list(folder.glob("*.json"))) == 1
            config = json.loads((tmp / "out" / "config.json").read_text())["config"]
            assert satisfies(p, config[p.name])


@pytest.mark.parametrize("args, named", [
    (["--set", "depth=1000", "--set", "width=8192", "--set", "batch_size=65536"], "GiB"),
    (["--set", "normalization=batch", "--set", "batch_size=1"], "batch_size"),
    (["--set", "depth=" + "9" * 5000], "depth"),
    (["--seeds", "²"], "seeds"),
    (["--seeds", "9" * 5000], "seeds"),
    (["--set", "dépth=3"], "dépth"),
])
def test_cli_adversarial_examples(tmp_path, args, named):
    code, out, err = cli(["run", "training", *args, "--out", str(tmp_path / "out")])
    assert code == 2 and err.startswith("error:") and named in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_cli_out_is_a_file(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    code, _, err = cli(["run", "signal_propagation", "--set=depth=2", "--set=width=4",
                        "--out", str(tmp_path / "out")])
    assert code == 2 and "--out" in err


# --------------------------------------------------------------------------- papermill

def _parameters_source(nb_path: Path, parameters: dict) -> list[str]:
    """The code cells up to the parameters and papermill's injected cell, as papermill
    would write them (values rendered by papermill's own Python translator)."""
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(nbformat.read(nb_path, as_version=4), parameters)
    cells = []
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if cell.cell_type == "code" and ("parameters" in tags or "injected-parameters" in tags):
            cells.append(cell.source)
    return cells


@settings(max_examples=60, deadline=None, derandomize=True)
@given(value=adversarial(), data=st.data())
def test_papermill_rendered_parameters(value, data):
    """In process: papermill renders the value into the injected cell, the notebook's
    parameter cells run, and notebook_parameters accepts it or names the parameter."""
    chapter = data.draw(st.sampled_from(sorted(c for c in CHAPTERS if CHAPTERS[c].params)))
    p = data.draw(st.sampled_from(CHAPTERS[chapter].params))
    namespace: dict = {"__builtins__": __builtins__}
    before = chapters.names_before(namespace)
    try:
        sources = _parameters_source(ROOT / "notebooks" / f"{chapter}.ipynb", {p.name: value})
    except Exception:  # papermill itself cannot render it (e.g. bytes): never reaches us
        return
    for source in sources:
        exec(source, namespace)  # noqa: S102 - papermill's own rendering of test values
    try:
        params = CHAPTERS[chapter].parameters(namespace, before)
    except ConfigError as err:
        assert _named(err, p.name), str(err)
        return
    assert satisfies(p, params[p.name])


PAPERMILL_CASES = [  # Python API: parameters dicts
    ({"depth": "many"}, "depth"),
    ({"depth": 10**9}, "depth"),
    ({"seeds": float("nan")}, "seeds"),
    ({"profile": ""}, "profile"),
    ({"dept": 60}, "dept"),
    ({"relu_sigma_w": ["a"]}, "relu_sigma_w"),
    ({"batch_size": True}, "batch_size"),
    ({"_depth": 10}, "_depth"),  # a private-looking name is still a parameter given
    ({"chapter": 1}, "chapter"),  # rebinds a name the notebook imported
]
PAPERMILL_CLI_CASES = [  # command line: values parsed as YAML
    (["-p", "depth", "2024-01-01"], "depth"),  # a YAML date
    (["-y", "seeds: .nan\nwidth: 1e3"], "seeds"),
]
_API = (
    "import sys, papermill as pm\n"
    "params = eval(sys.argv[1], {'nan': float('nan')})\n"
    "try:\n"
    "    pm.execute_notebook(sys.argv[2], sys.argv[3], parameters=params,\n"
    "                        progress_bar=False, cwd=sys.argv[4])\n"
    "except pm.PapermillExecutionError as err:\n"
    "    print('PapermillExecutionError', err.ename, str(err))\n"
    "    sys.exit(3)\n"
)


@pytest.mark.slow
def test_papermill_refuses_adversarial_parameters(tmp_path):
    """Real papermill executions of notebooks/depth.ipynb, two kernels at a time."""
    nb, cwd = str(ROOT / "notebooks" / "depth.ipynb"), str(ROOT / "notebooks")
    papermill = str(Path(sys.executable).parent / "papermill")
    commands = [[sys.executable, "-c", _API, repr(params), nb, str(tmp_path / f"a{i}.ipynb"),
                 cwd] for i, (params, _) in enumerate(PAPERMILL_CASES)]
    commands += [[papermill, nb, str(tmp_path / f"c{i}.ipynb"), *args, "--cwd", cwd]
                 for i, (args, _) in enumerate(PAPERMILL_CLI_CASES)]
    named = [n for _, n in PAPERMILL_CASES + PAPERMILL_CLI_CASES]
    env = {**os.environ, "EXPLODING_GRADIENTS_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    procs = []
    for command in commands:
        if len(procs) >= 2:
            procs[-2].wait()
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, env=env))
    for i, (proc, name) in enumerate(zip(procs, named, strict=True)):
        out, _ = proc.communicate(timeout=300)
        if i < len(PAPERMILL_CASES):
            assert proc.returncode == 3, (commands[i][3], out[-2000:])
            assert re.search(r"PapermillExecutionError (Config|InjectedParameter)Error", out), \
                out[-2000:]
        else:
            assert proc.returncode != 0 and "ConfigError" in out, out[-2000:]
        assert f"parameter {name!r}" in out or f"parameter(s) {name!r}" in out, out[-2000:]
    assert not (tmp_path / "cache").exists(), "no experiment may have run"


def test_papermill_api_refuses_a_date_itself(tmp_path):
    """papermill's Python API cannot store a date in the notebook's metadata: it fails
    before starting a kernel, so nothing of ours runs (the CLI case above gets a str)."""
    import papermill as pm

    with pytest.raises(TypeError, match="date"):
        pm.execute_notebook(ROOT / "notebooks" / "depth.ipynb", tmp_path / "o.ipynb",
                            parameters={"depth": datetime.date(2024, 1, 1)},
                            progress_bar=False)


# --------------------------------------------------------------------------- the cache

@pytest.mark.parametrize("entry", [
    {"meta": {}, "checksum": "x", "table": {"__reduce__": "os.system"}},
    {"py/object": "os.system", "args": ["echo pwned"]},
    [1, 2, 3],
    "just a string",
])
def test_cache_never_trusts_unknown_structures(isolated_cache, entry):
    isolated_cache.mkdir(parents=True)
    path = isolated_cache / ("a" * 64 + ".json")
    path.write_text(json.dumps(entry))
    with pytest.warns(UserWarning, match="is not valid"):
        assert cache.load(path.stem) is None
    assert not path.exists()


def test_cache_refuses_pickles(isolated_cache):
    import pickle

    isolated_cache.mkdir(parents=True)
    path = isolated_cache / ("b" * 64 + ".json")
    payload = pd.DataFrame({"a": [1.0]})
    path.write_bytes(pickle.dumps(payload))
    with pytest.warns(UserWarning, match="is not valid"):
        assert cache.load(path.stem) is None
    assert not path.exists()


def test_stub_keeps_fuzzing_cheap():
    assert stub({"a": 1}, 0).shape == (2, 2)

