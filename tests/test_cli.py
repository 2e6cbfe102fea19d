"""Command-line behaviour: help is fast and TensorFlow-free, bad arguments are one line, exit codes."""
from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from csst_sls_z.cli import main

REPO = Path(__file__).resolve().parents[1]
# What TensorFlow's native libraries print (absl / TSL format, and their companions).
NATIVE_TF = re.compile(r"cuInit|oneDNN|absl::InitializeLog|cpu_feature_guard|cuda_|^[IWEF]\d{4} ", re.M)


def _env_without_tf_settings():
    """The user's environment as a newcomer has it: no TF_CPP_MIN_LOG_LEVEL (conftest sets one)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "CSST_SLS_Z_TF_LOG_QUIETED")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


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


# ---------------------------------------------------------------- issue 13: a newcomer's first hour
def readme_first_command() -> str:
    """The first ```bash block of README.md, without its leading ``pip install -e .``."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)\n```", text, re.S).group(1).strip()
    assert block.startswith("pip install -e . &&"), block
    return block.split("&&", 1)[1].strip()


@pytest.mark.slow
def test_readme_first_command_runs_twice(tmp_path):
    """The main job of the README, its own text, twice in the same directory: exit 0 both times."""
    command = readme_first_command()
    assert "csst-sls-z inspect" in command.split("&&")[-1]
    for attempt in (1, 2):
        out = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True,
                             env=_env_without_tf_settings(), timeout=1200)
        assert out.returncode == 0, (attempt, out.stderr[-3000:])
        assert "ZWARN bits" in out.stdout and "sigma_NMAD" in out.stdout       # it ends on inspect's summary
        assert not NATIVE_TF.search(out.stderr), out.stderr[-3000:]
        assert "Traceback" not in out.stderr
    pngs = list(tmp_path.glob("demo/*.png"))
    assert pngs and pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _fail_fast_case(tmp_path, case, product):
    """(argv, the name the error must mention) for each wrong invocation the checks must catch."""
    out = tmp_path / "o.fits"
    if case == "missing":
        return [str(tmp_path / "nope.fits"), "-o", str(out)], "nope.fits"
    if case == "directory":
        (tmp_path / "adir").mkdir()
        return [str(tmp_path / "adir"), "-o", str(out)], "adir"
    if case == "not_fits":
        (tmp_path / "notes.fits").write_text("not a FITS file\n")
        return [str(tmp_path / "notes.fits"), "-o", str(out)], "notes.fits"
    if case == "empty":
        (tmp_path / "empty.fits").write_bytes(b"")
        return [str(tmp_path / "empty.fits"), "-o", str(out)], "empty.fits"
    if case == "output_dir_missing":
        return [str(product), "-o", str(tmp_path / "nodir" / "o.fits")], "nodir"
    if case == "output_exists":
        out.write_bytes(b"an earlier output")
        return [str(product), "-o", str(out)], "--overwrite"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing", "directory", "not_fits", "empty", "output_dir_missing",
                                  "output_exists"])
def test_wrong_invocation_fails_before_tensorflow(case, tmp_path, sim_product):
    """Exit 1, exactly one line on stderr naming the problem, a status line saying why, no TensorFlow."""
    argv, needle = _fail_fast_case(tmp_path, case, sim_product)
    code = ("import sys\nfrom csst_sls_z.cli import main\n"
            f"rc = main(['run'] + {argv!r})\n"
            "print('RESULT', rc, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=_env_without_tf_settings())
    assert out.stdout.strip().splitlines()[-1] == "RESULT 1 False", out.stdout + out.stderr
    err = out.stderr.splitlines()
    assert len(err) == 1, out.stderr
    assert err[0].startswith("csst-sls-z run: error: ") and needle in err[0]
    status = [line for line in out.stdout.splitlines() if line.startswith("status ")]
    assert status == [f"status ERROR: nothing written: {err[0].split('error: ', 1)[1]}"]
    if case == "output_exists":
        assert (tmp_path / "o.fits").read_bytes() == b"an earlier output"


@pytest.mark.slow
def test_run_stderr_holds_no_tensorflow_native_log(sim_product, dummy_refset, tmp_path):
    cmd = [sys.executable, "-m", "csst_sls_z.cli", "run", str(sim_product), "-o", str(tmp_path / "o.fits"),
           "--reference-dir", str(dummy_refset), "--samples", "4"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env_without_tf_settings())
    assert out.returncode == 0, out.stderr[-3000:]
    assert not NATIVE_TF.search(out.stderr), out.stderr
    # A successful run of one file is quiet at the default level: its status line and its output.
    lines = out.stdout.splitlines() + out.stderr.splitlines()
    assert len(lines) <= 3, lines
    assert out.stdout.splitlines()[-1] == str(tmp_path / "o.fits") and (tmp_path / "o.fits").exists()
    assert out.stdout.startswith("status ")


def test_native_log_filter_knows_the_lines():
    from csst_sls_z.tfenv import is_native_log_line
    for line in ["I0000 00:00:1796104861.091658    3338 port.cc:153] oneDNN custom operations are on.",
                 "E0000 00:00:1796104878.909157    3523 cuda_platform.cc:52] failed call to cuInit: INTERNAL",
                 "W0000 00:00:1796104878.909157    3523 gpu_device.cc:2344] Cannot dlopen some GPU libraries.",
                 "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
                 "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow"]:
        assert is_native_log_line(line), line
    for line in ["2026-12-01 06:03:37,903 INFO csst_sls_z.network.loader: network cpu loaded",
                 "/usr/lib/python3/foo.py:3: DeprecationWarning: bar", "Traceback (most recent call last):"]:
        assert not is_native_log_line(line), line


def test_one_error_once_with_good_and_bad_inputs(sim_product, dummy_refset, tmp_path, capsys):
    """A missing input among good ones: one line for it, the others written, the status line says why."""
    code = main(["run", str(sim_product), str(tmp_path / "nope.fits"), "-o", str(tmp_path),
                 "--reference-dir", str(dummy_refset), "--samples", "4"])
    out = capsys.readouterr()
    err = [line for line in out.err.splitlines() if "nope.fits" in line]
    assert code == 1
    assert err == [f"csst-sls-z run: error: input product {tmp_path / 'nope.fits'} does not exist"]
    status = [line for line in out.out.splitlines() if line.startswith("status ")]
    assert len(status) == 1 and status[0].startswith("status WARNING: 40 objects")
    assert status[0].endswith("; 1 of 2 input(s) failed")
    assert (tmp_path / f"{Path(sim_product).name.split('.')[0]}_slsz.fits").is_file()


def test_run_progress_counts_every_object(sim_product, dummy_refset, tmp_path):
    from csst_sls_z.stage_cli import _progress_stage

    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    stage = _progress_stage(bar, reference_dir=dummy_refset, samples=4, chunk_size=16)
    result = stage.run([sim_product], tmp_path / "o.fits")
    assert result.exit_code == 0 and bar.n == result.summary["n_objects"] == 40


def test_log_lines_do_not_land_on_a_progress_bar():
    """While a bar is live a log record is written on its own line (tqdm.write), not after the bar."""
    from tqdm import tqdm
    from csst_sls_z.commands import TqdmLogHandler
    stream = io.StringIO()
    handler = TqdmLogHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    bar = tqdm(total=10, file=stream, disable=False, ncols=60, mininterval=0)
    bar.update(3)
    handler.emit(logging.LogRecord("t", logging.INFO, __file__, 1, "a log line", None, None))
    bar.close()
    text = stream.getvalue()
    before, after = text.split("a log line", 1)
    assert before[-1] in "\r\n", repr(text)          # the bar was cleared first
    assert after.startswith("\n")
    stream = io.StringIO()                              # no bar: an ordinary line
    TqdmLogHandler(stream).emit(logging.LogRecord("t", logging.INFO, __file__, 1, "plain", None, None))
    assert stream.getvalue() == "plain\n"


def test_progress_bars_only_on_a_terminal(monkeypatch):
    from csst_sls_z.commands import show_progress

    class Stream(io.StringIO):
        def __init__(self, tty):
            super().__init__()
            self.tty = tty

        def isatty(self):
            return self.tty
    monkeypatch.setattr(sys, "stderr", Stream(False))
    assert show_progress(False) is False                    # a log file gets no bars
    monkeypatch.setattr(sys, "stderr", Stream(True))
    assert show_progress(False) is True and show_progress(True) is False


PARSERS = {"run": "csst_sls_z.stage_cli:parser", "simulate": "csst_sls_z.simulation.simulate_cli:parser",
           "regenerate": "csst_sls_z.training.regenerate:parser", "batch": "csst_sls_z.batch:parser",
           "inspect": "csst_sls_z.inspect_cli:parser"}


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_help_wording(command, capsys):
    import importlib
    module, func = PARSERS[command].split(":")
    parser = getattr(importlib.import_module(module), func)()
    undocumented = [a.option_strings or a.dest for a in parser._actions if not (a.help or "").strip()]
    assert not undocumented, f"{command}: options without help {undocumented}"
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "(default: None)" not in text and "(default: False)" not in text
    flat = " ".join(text.split())
    assert not re.search(r"\(default:? [^)]*\) \(default", flat), flat    # never said twice
    if command in ("run", "batch"):
        assert re.search(r"Exit 0 ok.*1 .*3 nothing to do", flat), flat


def test_bad_values_name_what_is_expected(capsys):
    assert main(["run", "x.fits", "-o", "y.fits", "--seed", "abc"]) == 1
    err = capsys.readouterr().err
    assert "--seed: expected a non-negative integer, got 'abc'" in err and "_nonneg_int" not in err
    assert main(["run", "x.fits", "-o", "y.fits", "--samples", "0"]) == 1
    assert "--samples: expected a positive integer, got 0" in capsys.readouterr().err


def test_inspect_is_a_command(capsys):
    assert main(["--help"]) == 0
    assert "inspect" in capsys.readouterr().out
    assert main(["inspect", "--zwarn", "40"]) == 0
    assert capsys.readouterr().out.startswith("ZWARN 40 = LOW_SNR | LARGE_ZERR")


# ---------------------------------------------------------------- issue 12: one source for the stage's options
def _stage_parsers():
    from csst_sls_z.batch import parser as batch_parser
    from csst_sls_z.stage_cli import parser as run_parser
    from pipeline_hooks.csst_sls_z_hook import parser as hook_parser
    return {"run": (run_parser(), ["x.fits", "-o", "y.fits"]), "batch": (batch_parser(), ["x.fits", "-o", "d"]),
            "hook": (hook_parser(), ["--inputs", "x.fits", "--output-dir", "d"])}


@pytest.mark.parametrize("command", ["run", "batch", "hook"])
def test_stage_options_are_generated_from_the_spec(command):
    """run, batch and the hook offer every stage parameter with the spec's default and bounds,
    and one --override-<reftype> per reference type of the stage."""
    from csst_sls_z.commands import stage_params
    from csst_sls_z.stage import RedshiftStage
    parser, required = _stage_parsers()[command]
    options = {s for a in parser._actions for s in a.option_strings}
    for name, param in RedshiftStage.spec.items():
        if param.option:
            assert "--" + name.replace("_", "-") in options, (command, name)
    for reftype in RedshiftStage.reference_types:
        assert f"--override-{reftype}" in options
    params = stage_params(parser.parse_args(required))
    assert params == {name: p.default for name, p in RedshiftStage.spec.items()}   # the defaults, nothing else
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(required + ["--chunk-size", "0"])
    assert exc.value.code == 1
    args = parser.parse_args(required + ["--override-thresholds", "t.fits", "--chunk-size", "7"])
    params = stage_params(args)
    assert params["reference_overrides"] == {"thresholds": Path("t.fits")} and params["chunk_size"] == 7


def test_stage_defaults_are_declared_once():
    """No command restates a stage default: batch's Python entry takes the stage's parameters as given."""
    import inspect
    from csst_sls_z.batch import run_batch
    from csst_sls_z.stage import RedshiftStage
    sig = inspect.signature(run_batch)
    assert not set(sig.parameters) & set(RedshiftStage.spec)
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    for path in [*(REPO / "csst_sls_z" / m for m in COMMAND_MODULES), *(REPO / "pipeline_hooks").glob("*.py")]:
        text = path.read_text() if path.exists() else ""
        assert not re.search(r"\b4096\b", text) and not re.search(r"default=200\b", text), path


def test_reference_override_option_is_validated(sim_product, dummy_refset, tmp_path, capsys):
    """--override-<reftype> goes through the reference set's checks: one sentence, exit 1, nothing written."""
    wrong = dummy_refset / "calibration.fits"          # a reference file, of another type
    code = main(["run", str(sim_product), "-o", str(tmp_path / "o.fits"), "--reference-dir", str(dummy_refset),
                 "--override-thresholds", str(wrong), "--no-progress"])
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 1 and len(err) == 1 and "calibration.fits" in err[0] and "thresholds" in err[0], err
    assert not (tmp_path / "o.fits").exists()


def test_sigterm_guard_unwinds_like_ctrl_c_and_restores():
    import signal
    from csst_sls_z.commands import sigterm_as_interrupt
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            import time
            time.sleep(5)                   # the handler interrupts this at once
    assert signal.getsignal(signal.SIGTERM) == before


COMMAND_MODULES = {"cli.py", "commands.py", "stage_cli.py", "batch.py", "inspect_cli.py",
                   "simulation/simulate_cli.py", "training/regenerate.py", "training/add_refinement.py"}


def test_nothing_below_the_command_layer_imports_it():
    """Only command modules import the dispatcher, the plumbing or a command-only module (batch and
    regenerate are commands and libraries both: others may use their functions)."""
    import ast
    command_names = {"cli", "commands", "stage_cli", "inspect_cli", "simulation.simulate_cli"}
    pkg = REPO / "csst_sls_z"
    for path in pkg.rglob("*.py"):
        rel = path.relative_to(pkg).as_posix()
        if rel in COMMAND_MODULES:
            continue
        parts = rel[:-3].split("/")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = parts[:len(parts) - node.level] if node.level else []
                module = ".".join(base + (node.module.split(".") if node.module else []))
                module = module.removeprefix("csst_sls_z.")
                targets = {module} | {f"{module}.{a.name}".lstrip(".") for a in node.names}
            elif isinstance(node, ast.Import):
                targets = {a.name.removeprefix("csst_sls_z.") for a in node.names}
            else:
                continue
            assert not targets & command_names, (rel, targets & command_names)


def _package_imports():
    """module -> the package modules it imports (at module level or inside functions)."""
    import ast
    pkg = REPO / "csst_sls_z"
    modules = {p.relative_to(pkg).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
               for p in pkg.rglob("*.py")}
    graph = {}
    for path in pkg.rglob("*.py"):
        rel = path.relative_to(pkg).with_suffix("").as_posix()
        name = rel.replace("/", ".").removesuffix(".__init__")
        parts = rel.split("/")
        is_pkg = path.name == "__init__.py"
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                keep = len(parts) - node.level + (1 if is_pkg else 0)
                base = ".".join(parts[:keep][:-1] if is_pkg and keep == len(parts) else parts[:keep])
                mod = ".".join(x for x in (base, node.module or "") if x)
                cands = [mod] + [f"{mod}.{a.name}" if mod else a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("csst_sls_z"):
                mod = node.module.removeprefix("csst_sls_z").lstrip(".")
                cands = [mod] + [f"{mod}.{a.name}".lstrip(".") for a in node.names]
            else:
                continue
            found |= {c.removesuffix(".__init__") for c in cands if c in modules and c != name}
        graph[name] = found
    return graph


def test_training_evaluation_modules_import_one_way():
    """No import cycle among the training modules (evaluation, baselines, steps and the driver)."""
    graph = _package_imports()
    training = {m for m in graph if m.startswith("training")}

    def reaches(a, b, seen=()):
        return any(n == b or (n not in seen and reaches(n, b, (*seen, n))) for n in graph.get(a, ()))
    cycles = sorted((a, b) for a in training for b in graph[a] if b in training and reaches(b, a))
    assert not cycles, cycles
    assert "training.baselines" in graph["training.evaluate_generalisation"]
    assert "training.evaluate" not in graph["training.evaluate_generalisation"]
