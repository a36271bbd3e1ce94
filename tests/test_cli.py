import json
import subprocess
import sys

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
