import errno
import json
import os
import subprocess
import sys
import time

import pandas as pd

from exploding_gradients.cli import main


def test_list_shows_parameters_defaults_and_allowed(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for text in ["signal_propagation", "training", "depth", "allowed", "'relu'", "sigma_w"]:
        assert text in out


def test_run_writes_tidy_results_and_config(tmp_path):
    out = tmp_path / "out"
    assert main(["run", "signal_propagation", "--set", "depth=5", "--set", "width=16",
                 "--set", "activation=tanh", "--seeds", "3", "--out", str(out)]) == 0
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 15 and sorted(df.seed.unique()) == [0, 1, 2]
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["activation"] == "tanh" and config["config"]["depth"] == 5
    assert config["config"]["sigma_b"] == 0.0  # fully resolved, defaults included


def test_diverging_run_exits_zero(tmp_path):
    assert main(["run", "training", "--set", "lr=5", "--set", "sigma_w=3", "--set",
                 "steps=20", "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "results.csv")
    assert (df.diverged_step >= 0).all()


def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    for args in (["--set", "depth=-1"], ["--set", "foo=1"], ["--set", "depth=many"],
                 ["--seeds", "many"], ["--set", "nonsense"]):
        assert main(["run", "signal_propagation", *args, "--out", str(out)]) == 2
        assert "error:" in capsys.readouterr().err
    assert not out.exists()


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "exploding_gradients", "list"],
                            capture_output=True, text=True, check=True)
    assert "signal_propagation" in result.stdout


def test_seeds_are_plain_ascii_digits(tmp_path, capsys):
    # "²".isdigit() is True but int("²") raised ValueError; 5000 digits raised too
    for seeds in ["²", "１２", "9" * 5000, "1e3", "0", ""]:
        code = main(["run", "signal_propagation", "--set", "depth=2", "--set", "width=4",
                     f"--seeds={seeds}", "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error:") and "'seeds'" in err
    assert main(["run", "signal_propagation", "--set", "depth=2", "--set", "width=4",
                 "--seeds", " 2 ", "--out", str(tmp_path / "out")]) == 0


def test_out_that_is_a_file_is_refused_before_compute(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["run", "signal_propagation", "--out", str(tmp_path / "file")]) == 2
    assert "--out" in capsys.readouterr().err


# --------------------------------------------------------------------------- --out

def _run(out, depth, seeds=2):
    return main(["run", "signal_propagation", "--set", f"depth={depth}", "--set", "width=8",
                 "--seeds", str(seeds), "--out", str(out)])


def _whole_run(out):
    """The run in ``out``: its config's depth and seeds, checked against the table."""
    config = json.loads((out / "config.json").read_text())
    table = pd.read_csv(out / "results.csv")
    assert sorted(table.seed.unique()) == list(range(config["seeds"]))
    assert len(table) == config["seeds"] * config["config"]["depth"]
    return config["config"]["depth"], config["seeds"]


def test_a_write_that_fails_leaves_the_previous_run_whole(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert _run(out, depth=3) == 0

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    assert _run(out, depth=4) == 1
    assert "still holds what it held before" in capsys.readouterr().err
    assert _whole_run(out) == (3, 2)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing half-written


def test_ctrl_c_while_writing_leaves_the_previous_run_whole(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert _run(out, depth=3) == 0

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)  # seed 0 is cached: only the write fsyncs
    assert _run(out, depth=3, seeds=1) == 130
    assert "still holds what it held before" in capsys.readouterr().err
    assert _whole_run(out) == (3, 2)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    monkeypatch.undo()
    assert _run(out, depth=3, seeds=1) == 0 and _whole_run(out) == (3, 1)


def test_ctrl_c_during_a_run_says_how_to_resume(tmp_path, monkeypatch, capsys):
    from exploding_gradients import cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run", interrupted)
    assert _run(tmp_path / "out", depth=3) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "resume" in err and "Traceback" not in err


def test_out_holding_other_files_is_refused_before_compute(tmp_path, capsys):
    out = tmp_path / "project"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert _run(out, depth=3) == 2
    assert "holds other files (notes.txt)" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine" and len(list(out.iterdir())) == 1


def test_killed_at_any_moment_out_holds_one_whole_run(tmp_path):
    """SIGKILL while a large table is being written (its seeds come from the cache, so
    writing is most of the time): the folder holds the old run or the new one."""
    env = {**os.environ, "EXPLODING_GRADIENTS_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    command = [sys.executable, "-m", "exploding_gradients", "run", "training", "--set",
               "depth=3", "--set", "width=4", "--set", "steps=3000", "--set", "log_every=1",
               "--seeds"]
    for seeds in ("2", "3"):  # fill the cache, and write an old run
        subprocess.run([*command, seeds, "--out", str(out)], env=env, check=True,
                       capture_output=True)
    seen = set()
    for delay in (0.6, 0.9, 1.2, 1.5, 1.8, 2.2, 2.8):
        proc = subprocess.Popen([*command, "2" if len(seen) % 2 else "3", "--out", str(out)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        config = json.loads((out / "config.json").read_text())
        table = pd.read_csv(out / "results.csv")
        assert sorted(table.seed.unique()) == list(range(config["seeds"]))
        seen.add(config["seeds"])


def test_ctrl_c_while_the_package_loads_ends_with_a_message(tmp_path):
    """Loading torch takes seconds; an interrupt then is reproduced exactly by an import
    hook that raises KeyboardInterrupt when torch is imported."""
    import subprocess
    import sys

    code = ("import sys\n"
            "class Interrupt:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch':\n"
            "            raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, Interrupt())\n"
            "import exploding_gradients\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 130
    assert done.stderr.strip() == ("interrupted while loading exploding_gradients; "
                                   "nothing was computed")


def test_a_read_only_cache_warns_in_one_line_and_still_writes_out(tmp_path, monkeypatch,
                                                                   capsys):
    from exploding_gradients.engine import cache

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setenv("EXPLODING_GRADIENTS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache.tempfile, "mkstemp", read_only)
    out = tmp_path / "out"
    assert main(["run", "signal_propagation", "--set", "depth=3", "--set", "width=8",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: results cache") and "is read-only" in err
    assert "UserWarning" not in err and "Traceback" not in err
    assert len(pd.read_csv(out / "results.csv")) == 3
