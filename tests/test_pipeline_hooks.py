"""The scheduler adapter: function, python -m entry, and the csst CsstProcessor shape."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from csst_sls_z.datamodel import StageStatus
from pipeline_hooks import CsstSlsZProcessor, run_stage


def test_run_stage_returns_exit_code_and_result(sim_product, dummy_refset, tmp_path):
    code, result = run_stage([sim_product], tmp_path / "out", dummy_refset, samples=4)
    assert code == 0
    assert result.status in (StageStatus.PERFECT, StageStatus.WARNING)
    assert len(result.outputs) == 1 and result.outputs[0].endswith("_slsz.fits")
    code, result = run_stage([tmp_path / "missing.fits"], tmp_path / "out2", dummy_refset, samples=4)
    assert code == 1 and result.status is StageStatus.ERROR


def test_csst_processor_adapter(sim_product, dummy_refset, tmp_path):
    csst = pytest.importorskip("csst.common.processors")
    proc = CsstSlsZProcessor()
    assert isinstance(proc, csst.CsstProcessor)
    proc.prepare(samples=4)
    status = proc.run({"inputs": [sim_product], "output_dir": tmp_path / "o", "reference_dir": dummy_refset})
    assert status is csst.CsstProcStatus.normal
    status = proc.run({"inputs": [tmp_path / "nope.fits"], "output_dir": tmp_path / "o2",
                       "reference_dir": dummy_refset})
    assert status is csst.CsstProcStatus.ioerror
    # A partial failure is still an ioerror: the scheduler must see the lost file.
    status = proc.run({"inputs": [sim_product, tmp_path / "nope.fits"], "output_dir": tmp_path / "o3",
                       "reference_dir": dummy_refset})
    assert status is csst.CsstProcStatus.ioerror and len(proc.result.outputs) == 1
    proc.cleanup()


def test_python_m_entry_exit_codes(sim_product, dummy_refset, tmp_path):
    cmd = [sys.executable, "-m", "pipeline_hooks.csst_sls_z_hook", "--inputs", str(sim_product),
           "--output-dir", str(tmp_path / "o"), "--reference-dir", str(dummy_refset), "--samples", "4"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "_slsz.fits" in out.stdout
    bad = subprocess.run(cmd[:3] + ["--bogus"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr


def test_no_spectra_gives_the_distinct_exit_code(sim_product, dummy_refset, tmp_path):
    """A product whose spectra tables have no rows: 'nothing to do' (3), from the function and python -m."""
    from astropy.io import fits
    from csst_sls_z.datamodel import EXIT_NOTHING_TO_DO
    empty = tmp_path / "empty.fits"
    with fits.open(sim_product) as hdul:
        hdus = [hdul[0].copy()] + [fits.BinTableHDU(hdul[n].data[:0], header=hdul[n].header, name=n)
                                   for n in ("SPEC_GV", "SPEC_GI")]
        fits.HDUList(hdus).writeto(empty, checksum=True)     # fresh checksums: empty, not corrupt
    code, result = run_stage([empty], tmp_path / "o", dummy_refset, samples=4)
    assert code == EXIT_NOTHING_TO_DO == 3
    assert result.status is StageStatus.NO_DATA and not result.outputs
    cmd = [sys.executable, "-m", "pipeline_hooks.csst_sls_z_hook", "--inputs", str(empty),
           "--output-dir", str(tmp_path / "o2"), "--reference-dir", str(dummy_refset), "--samples", "4"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 3 and "Traceback" not in out.stderr
    assert not list(tmp_path.glob("o2/*.fits"))             # no output product for no spectra


# ---------------------------------------------------------------- issue 13: the scheduler's logs stay clean
HOOK = [sys.executable, "-m", "pipeline_hooks.csst_sls_z_hook"]
NATIVE_TF = re.compile(r"cuInit|oneDNN|absl::InitializeLog|cpu_feature_guard|^[IWEF]\d{4} ", re.M)


def _clean_env():
    return {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "CSST_SLS_Z_TF_LOG_QUIETED")}


def test_hook_help_prints_no_warning():
    out = subprocess.run(HOOK + ["--help"], capture_output=True, text=True, timeout=120, env=_clean_env())
    assert out.returncode == 0
    assert out.stderr == "", out.stderr                    # no runpy RuntimeWarning, nothing else
    flat = " ".join(out.stdout.split())
    assert "--samples SAMPLES BNN samples per spectrum" in flat
    assert "--seed SEED seed of the BNN sampling noise" in flat


def test_hook_run_prints_no_warning(sim_product, dummy_refset, tmp_path):
    cmd = HOOK + ["--inputs", str(sim_product), "--output-dir", str(tmp_path / "o"), "--reference-dir",
                  str(dummy_refset), "--samples", "4"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_clean_env())
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Warning" not in out.stderr and " WARNING " not in out.stderr, out.stderr
    assert not NATIVE_TF.search(out.stderr), out.stderr


def test_package_still_offers_the_adapter_names():
    import pipeline_hooks
    assert pipeline_hooks.run_stage is run_stage and pipeline_hooks.CsstSlsZProcessor is CsstSlsZProcessor
    with pytest.raises(AttributeError):
        pipeline_hooks.no_such_name
