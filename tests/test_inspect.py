"""``csst-sls-z inspect``: ZWARN decoding, the summary, metrics against the truth, the figure, errors;
and the SLS_REDSHIFT header comments it and people read (issue 13)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from csst_sls_z.datamodel import EXT_REDSHIFT, EXT_TRUTH, REDSHIFT_COLUMNS, TTYPE_COMMENT_MAX, ZWARN_MEANINGS, ZWarn
from csst_sls_z.inspect_cli import main
from csst_sls_z.inspect_summary import summary, truth_metrics
from csst_sls_z.products.output_reader import read_output as read_product

decode_zwarn = ZWarn.decode
from csst_sls_z.training import metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def outputs(sim_product, dummy_stage, tmp_path_factory):
    """A full output (TRUTH and spectra copied from the input) and a catalogue-only one."""
    import copy
    out = tmp_path_factory.mktemp("inspect")
    full, cat_only = out / "full_slsz.fits", out / "catonly_slsz.fits"
    for path, catalog_only in ((full, False), (cat_only, True)):
        stage = copy.copy(dummy_stage)            # the session's network, another parameter
        stage.params = {**stage.params, "catalog_only": catalog_only}
        result = stage.run([sim_product], path)
        assert result.exit_code == 0, result.failures
    return full, cat_only


def _columns(path):
    with fits.open(path) as hdul:
        cat = np.array(hdul[EXT_REDSHIFT].data)
        truth = np.array(hdul[EXT_TRUTH].data) if EXT_TRUTH in hdul else None
    return cat, truth


# ---------------------------------------------------------------- ZWARN
def test_every_zwarn_bit_is_decoded(capsys):
    assert set(ZWARN_MEANINGS) == {flag.name for flag in ZWarn}      # a new bit needs its meaning
    assert [flag.bit for flag in ZWarn] == list(range(len(ZWarn)))     # bits numbered from 0, no gap
    assert not set(ZWarn.reserved_downstream()) & {flag.bit for flag in ZWarn}
    for flag in ZWarn:
        assert main(["--zwarn", str(int(flag))]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"ZWARN {int(flag)} = {flag.name}\n")
        assert f"bit {flag.bit:2d} {flag.name}" in out and flag.meaning in out
    every = sum(int(f) for f in ZWarn)
    assert [name for _, name, _ in decode_zwarn(every)] == [f.name for f in sorted(ZWarn, key=int)]
    assert [name for _, name, _ in decode_zwarn(40)] == ["LOW_SNR", "LARGE_ZERR"]
    assert decode_zwarn(0) == []
    assert decode_zwarn(1 << 16) == [(16, "BIT16", "reserved for downstream use")]
    assert main(["--zwarn", "0"]) == 0 and "no bit set" in capsys.readouterr().out


def test_undefined_zwarn_bits_are_said(capsys):
    assert main(["--zwarn", "12345"]) == 0              # 12345 = NODATA | LOW_SNR | Z_FITLIMIT | LARGE_ZERR | bits 12, 13
    out = capsys.readouterr().out
    assert "12345 has undefined bits set (12, 13)" in out
    assert main(["--zwarn", str(int(ZWarn.LOW_SNR) | 1 << 16)]) == 0
    out = capsys.readouterr().out
    assert "undefined" not in out and "bit 16 is reserved for downstream stages" in out
    assert main(["--zwarn", "40"]) == 0
    out = capsys.readouterr().out
    assert "undefined" not in out and "reserved" not in out


def test_summary_counts_every_bit(outputs, capsys):
    full, _ = outputs
    cat, _ = _columns(full)
    s = summary(cat)
    assert s["n_objects"] == len(cat) == 40 and s["n_ok"] == int(np.sum(cat["ZWARN"] == 0))
    for bit, name, count, meaning in s["bits"]:
        assert count == int(np.sum(cat["ZWARN"] & (1 << bit) != 0)) and meaning == ZWARN_MEANINGS[name]
    ok = np.isfinite(cat["Z"]) & np.isfinite(cat["ZERR"])
    assert s["median_zerr_1pz"] == pytest.approx(np.median(cat["ZERR"][ok] / (1 + cat["Z"][ok])))
    assert s["snr_gi_quartiles"] == pytest.approx(tuple(np.percentile(cat["SNR_GI"], [25, 50, 75])))
    assert main([str(full)]) == 0
    out = capsys.readouterr().out
    assert f"ZWARN == 0: {s['n_ok']} " in out
    for _, name, count, _ in s["bits"]:
        assert f"{name:<20} {count:6d}" in out


# ---------------------------------------------------------------- against the truth
def test_metrics_are_the_training_metrics(outputs, sim_product, capsys):
    full, cat_only = outputs
    cat, truth = _columns(full)
    order = {int(o): k for k, o in enumerate(truth["OBJID"])}
    z_true = np.array([truth["Z_TRUE"][order[int(o)]] for o in cat["OBJID"]])
    edges = [0.0, 0.5, 1.0, 1.6]
    m = truth_metrics(cat["Z"], cat["ZERR"], z_true, edges)
    assert m["overall"]["sigma_nmad"] == metrics.sigma_nmad(cat["Z"], z_true)
    assert m["overall"]["eta"] == metrics.outlier_fraction(cat["Z"], z_true)
    assert m["overall"]["ebar"] == metrics.mean_uncertainty(cat["ZERR"], z_true)
    for key, fn, first in (("sigma_nmad", metrics.sigma_nmad, cat["Z"]),
                           ("eta", metrics.outlier_fraction, cat["Z"]),
                           ("ebar", metrics.mean_uncertainty, cat["ZERR"])):
        expected = metrics.binned(fn, z_true, edges, first, z_true)
        got = [b[key] for b in m["bins"]]
        np.testing.assert_array_equal(got, [b["value"] for b in expected])
        assert [b["n"] for b in m["bins"]] == [b["n"] for b in expected]
    # The truth read from the product itself and from --truth (a catalogue-only output) are the same.
    own = read_product(full)
    given = read_product(cat_only, Path(sim_product))
    np.testing.assert_array_equal(own.truth, z_true)
    np.testing.assert_array_equal(given.truth, z_true)
    assert given.spectra_path == Path(sim_product)               # spectra found in the input
    assert main([str(cat_only), "--truth", str(sim_product), "--z-bins", "0,0.5,1,1.6"]) == 0
    out = capsys.readouterr().out
    all_line = next(line for line in out.splitlines() if line.strip().startswith("all "))
    assert f"{m['overall']['sigma_nmad']:.4f}" in all_line and f"{100 * m['overall']['eta']:.1f}%" in all_line
    assert "0.50-1.00" in out


def test_no_truth_is_said(outputs, capsys):
    _, cat_only = outputs
    assert main([str(cat_only)]) == 0
    out = capsys.readouterr().out
    assert "truth: none" in out and "sigma_NMAD" not in out.split("truth: none")[0]


# ---------------------------------------------------------------- the figure
@pytest.mark.parametrize("which", ["full", "catalogue only, no truth"])
def test_plot_is_a_png(which, outputs, tmp_path, capsys):
    path = outputs[0] if which == "full" else outputs[1]
    fig = tmp_path / "fig.png"
    assert main([str(path), "--plot", str(fig)]) == 0
    data = fig.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000
    assert f"figure: {fig}" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize("suffix, magic", [(".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_plot_writes_the_format_its_suffix_names(suffix, magic, outputs, dummy_refset, tmp_path):
    fig = tmp_path / f"fig{suffix}"
    assert main([str(outputs[0]), "--plot", str(fig), "--reference-dir", str(dummy_refset)]) == 0
    assert fig.read_bytes().startswith(magic)


def test_figure_panels_read_the_product(outputs, dummy_refset):
    """p(z) of the examples from the PZ column on its header's grid; the LARGE_ZERR threshold of the run's
    thresholds file; spectra y-limits set by the bulk of the pixels, not the band ends."""
    from csst_sls_z.inspect_figure import _examples, _large_zerr, run_reference_set, spectrum_ylim
    from csst_sls_z.products.output_reader import pz_rows
    from csst_sls_z.pz import PzGrid
    from csst_sls_z.reffiles.tables import load_thresholds
    prod = read_product(outputs[0])
    with fits.open(outputs[0]) as hdul:
        grid = PzGrid.from_header(hdul[EXT_REDSHIFT].header)
        pz_all = np.array(hdul[EXT_REDSHIFT].data["PZ"], dtype=float)
    np.testing.assert_allclose(prod.pz_edges, grid.edges())
    rows = _examples(prod.catalog)
    np.testing.assert_array_equal(pz_rows(prod.path, rows), pz_all[rows])
    assert "PZ" not in prod.catalog.dtype.names              # read for the examples only
    refset, same = run_reference_set(prod, dummy_refset)
    assert same and refset.directory == dummy_refset
    value, label = _large_zerr(refset, same, explicit=True)
    assert value == load_thresholds(refset.path("thresholds")).large_zerr and "LARGE_ZERR above" in label
    refset, same = run_reference_set(prod)      # the shipped set is not the run's: no threshold is claimed
    assert not same and _large_zerr(refset, same, explicit=False)[0] is None
    wave = np.linspace(4000, 9000, 500)
    err = np.ones(500)
    err[:20] = err[-20:] = 50.0                                  # the band ends: large errors, spikes
    flux = np.random.default_rng(1).normal(2.0, 1.0, 500)
    flux[:20], flux[-20:] = -400.0, 900.0
    lo, hi = spectrum_ylim([("GV", wave, flux, err)])
    assert -5 < lo < 0 and 4 < hi < 10


def test_plot_refuses_a_suffix_it_cannot_write(outputs, tmp_path, capsys):
    for name, text in (("fig.foo", "its suffix .foo is not a figure format"), ("fig", "has no suffix"),
                       (".", "is a directory")):
        target = tmp_path / name if name != "." else tmp_path
        assert main([str(outputs[0]), "--plot", str(target)]) == 1
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("csst-sls-z inspect: error: cannot write the figure ") \
            and text in err[0], err
        if text != "is a directory":
            assert ".png, .pdf" in err[0], err                 # the formats it can write
        assert captured.out == ""                              # refused before anything is read or printed
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ---------------------------------------------------------------- errors
def test_bad_input_is_one_sentence(outputs, sim_product, tmp_path, capsys):
    (tmp_path / "notes.fits").write_text("not FITS\n")
    cases = [([str(tmp_path / "nope.fits")], "does not exist"),
             ([str(tmp_path / "notes.fits")], "is not a FITS file"),
             ([str(sim_product)], "has no SLS_REDSHIFT extension"),            # an input, not an output
             ([str(outputs[1]), "--truth", str(outputs[1])], "has no TRUTH extension"),
             ([str(outputs[0]), "--plot", str(tmp_path / "nodir" / "f.png")], "does not exist"),
             ([str(outputs[0]), "--reference-dir", "csst_sls_z_006"], "the shipped sets"),
             ([], "give an output product")]
    for argv, text in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("csst-sls-z inspect: error: ") and text in err[0], (argv, err)


def test_inspect_does_not_import_tensorflow(outputs):
    code = (f"import sys\nfrom csst_sls_z.cli import main\nrc = main(['inspect', {str(outputs[0])!r}])\n"
            "print('RESULT', rc, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "RESULT 0 False", out.stderr


# ---------------------------------------------------------------- SLS_REDSHIFT header comments
def test_column_comments_are_whole(outputs):
    """Every TTYPE comment in the written header is the data model's text in full (none cut off)."""
    with fits.open(outputs[0]) as hdul:
        header = hdul[EXT_REDSHIFT].header
        for i, col in enumerate(REDSHIFT_COLUMNS, start=1):
            assert header[f"TTYPE{i}"] == col.name
            assert len(col.header_comment) <= TTYPE_COMMENT_MAX, col.name
            assert header.comments[f"TTYPE{i}"] == col.header_comment, col.name
