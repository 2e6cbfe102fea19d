"""Command-line behaviour: help is fast and TensorFlow-free, bad arguments are one line, exit codes."""
from __future__ import annotations

import subprocess
import sys

import pytest

from csst_sls_z.cli import main


def _no_tf(code: str):
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('tensorflow' in sys.modules)"],
                         capture_output=True, text=True, timeout=120)
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["simulate", "--help"], ["regenerate", "--help"]])
def test_help_does_not_import_tensorflow(argv):
    code = f"from csst_sls_z.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    assert _no_tf(code) == "False"


def test_simulator_does_not_import_tensorflow():
    code = ("from csst_sls_z.simulation import load_models, simulate_arrays\n"
            "i, s, r = load_models()\nsimulate_arrays(5, 1, 'test', i, s)")
    assert _no_tf(code) == "False"


def test_unknown_command_and_bad_arguments(capsys):
    assert main(["fly"]) == 1
    assert "unknown command" in capsys.readouterr().err
    assert main(["run", "x.fits"]) == 1                  # missing -o: a code, not an exception
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("csst-sls-z run: error:")
    assert main(["run", "x.fits", "-o", "y.fits", "--samples", "0"]) == 1
    assert main(["simulate", "--help"]) == 0


def test_missing_input_is_one_sentence(tmp_path, dummy_refset, capsys):
    code = main(["run", str(tmp_path / "nope.fits"), "-o", str(tmp_path / "o.fits"),
                 "--reference-dir", str(dummy_refset)])
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 1 and len(err) == 1 and "nope.fits" in err[0]


def test_version(capsys):
    assert main(["--version"]) == 0
    assert "csst-sls-z" in capsys.readouterr().out
