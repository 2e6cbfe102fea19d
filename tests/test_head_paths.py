"""Issue 17: the fused head path gives the reference path's numbers; reading ahead changes nothing.

Speed is measured in benchmarks/bench_head.py, not here.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

DATA = Path(__file__).parent / "data"
REFSET = Path(__file__).parents[1] / "reference_files" / "csst_sls_z_0003"


def _stochastic_head(cfg, seed=0):
    """A smoke-sized head whose noise is large enough to show (the init is near-deterministic)."""
    from csst_sls_z.network.loader import build_network
    tf.random.set_seed(seed)
    net = build_network(cfg)
    rng = np.random.default_rng(seed)
    for layer in net.head.mnf:
        layer.kernel_logvar.assign(np.full(layer.kernel_logvar.shape, -3.0, np.float32))
        layer.z_logvar.assign(np.full(layer.z_logvar.shape, -2.0, np.float32))
        layer.bias_logvar.assign(np.full(layer.bias_logvar.shape, -4.0, np.float32))
    for v in net.head.out_layer.weights:
        v.assign(rng.normal(0.0, 0.3, v.shape).astype(np.float32))
    return net


def test_call_shared_is_call_on_tiled_input():
    from csst_sls_z.network.mnf import MNFDense
    layer = MNFDense(6, flow_hidden=8)
    layer(tf.zeros((1, 5)))
    layer.kernel_logvar.assign(tf.fill(layer.kernel_logvar.shape, -1.0))
    layer.z_logvar.assign(tf.fill(layer.z_logvar.shape, -1.0))
    x = tf.random.stateless_normal((7, 5), seed=[1, 2])
    ez = tf.random.stateless_normal((4, 1, 5), seed=[3, 4])
    eo = tf.random.stateless_normal((4, 7, 6), seed=[5, 6])
    want = layer(tf.broadcast_to(x[None], (4, 7, 5)), eps_z=ez, eps_out=eo).numpy()
    got = layer.call_shared(x, ez, eo).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("jit,block,per_object", [
    (True, None, True), (True, 4, False),                   # the default run: each path, each noise draw
    pytest.param(False, None, True, marks=pytest.mark.slow), pytest.param(True, 4, True, marks=pytest.mark.slow),
    pytest.param(True, None, False, marks=pytest.mark.slow)])
def test_fused_head_gives_the_reference_numbers(jit, block, per_object):
    """Same noise, same moments, including a short last batch (padded for XLA and cut again)."""
    from csst_sls_z.network.config import CONFIGS
    from csst_sls_z.network.sampler import Sampler
    cfg = replace(CONFIGS["smoke"], input_length=64)
    net = _stochastic_head(cfg)
    x = np.random.default_rng(1).standard_normal((21, 64, 2)).astype(np.float32)
    ref = Sampler(net.backbone, net.head, cfg, n_samples=16, seed=3, batch=8, head_path="reference",
                  per_object_noise=per_object)
    fused = Sampler(net.backbone, net.head, cfg, n_samples=16, seed=3, batch=8, jit_compile=jit, head_block=block,
                    per_object_noise=per_object)
    a, b = ref.predict(x, chunk_index=2), fused.predict(x, chunk_index=2)
    np.testing.assert_array_equal(a.z_cnn, b.z_cnn)
    np.testing.assert_allclose(b.mean, a.mean, rtol=0, atol=2e-6)
    np.testing.assert_allclose(b.aleatoric, a.aleatoric, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(b.epistemic, a.epistemic, rtol=1e-4, atol=1e-12)
    assert np.all(a.epistemic > 1e-8)                    # the noise really matters here
    with pytest.raises(ValueError, match="head_path"):
        Sampler(net.backbone, net.head, cfg, head_path="fast")


def test_warm_up_in_a_thread_changes_no_number():
    """Issue 17: tracing and compiling in a thread before the first batch gives the same moments."""
    from csst_sls_z.network.config import CONFIGS
    from csst_sls_z.network.sampler import Sampler
    cfg = replace(CONFIGS["smoke"], input_length=64)
    net = _stochastic_head(cfg)
    x = np.random.default_rng(2).standard_normal((11, 64, 2)).astype(np.float32)
    cold = Sampler(net.backbone, net.head, cfg, n_samples=8, seed=1, batch=8).predict(x, return_output=True)
    warm = Sampler(net.backbone, net.head, cfg, n_samples=8, seed=1, batch=8)
    warm.start_warm_up(64, return_output=True)
    got = warm.predict(x, return_output=True)
    assert warm._warm_thread is None                              # predict waited for it
    warm.start_warm_up(64, return_output=True)                    # the next file: once is enough
    assert getattr(warm, "_warm_thread", None) is None
    for k in ("z_cnn", "mean", "aleatoric", "epistemic", "output"):
        np.testing.assert_array_equal(getattr(got, k), getattr(cold, k), err_msg=k)



@pytest.mark.slow
def test_a_process_that_stops_during_the_warm_up_exits_with_its_own_code():
    """A stage that refuses its input right after starting the warm-up returns at once; the
    process must then exit with its own code, not abort because Python finalised while the
    warm-up thread was inside TensorFlow (exit 134, "terminate called ..."): the thread is
    not a daemon, so the interpreter waits for it."""
    import subprocess
    import sys
    code = ("import sys\n"
            "from dataclasses import replace\n"
            "from csst_sls_z.network.config import CONFIGS\n"
            "from csst_sls_z.network.loader import build_network\n"
            "from csst_sls_z.network.sampler import Sampler\n"
            "cfg = replace(CONFIGS['smoke'], input_length=64)\n"
            "net = build_network(cfg)\n"
            "Sampler(net.backbone, net.head, cfg, n_samples=8, batch=8).start_warm_up(64, return_output=True)\n"
            "sys.exit(3)\n")
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                              cwd=Path(__file__).parents[1])
        assert proc.returncode == 3, proc.stderr[-1000:]
        assert "terminate called" not in proc.stderr

@pytest.mark.slow
def test_shared_output_noise_gives_each_object_the_same_distribution():
    """Issue 17: drawing the output noise once per sample for the whole batch leaves each
    object's S-sample mean and variance distributed as with noise drawn per object (400
    seeds, two-sample KS per object and statistic), while the draws really are shared:
    the Monte-Carlo errors of two objects in one batch become correlated."""
    from scipy.stats import ks_2samp
    from csst_sls_z.network.config import CONFIGS
    from csst_sls_z.network.sampler import Sampler
    cfg = replace(CONFIGS["smoke"], input_length=64)
    net = _stochastic_head(cfg)
    x = np.random.default_rng(5).standard_normal((6, 64, 2)).astype(np.float32)
    feats, z_cnn = Sampler(net.backbone, net.head, cfg)._forward(tf.convert_to_tensor(x))
    runs = {}
    for per_object in (True, False):
        sampler = Sampler(net.backbone, net.head, cfg, n_samples=8, batch=6, per_object_noise=per_object)
        draws = [sampler.head_moments(feats, z_cnn, tf.constant([seed, 0], tf.int32)) for seed in range(400)]
        runs[per_object] = {k: np.array([d[i].numpy() for d in draws]) for i, k in enumerate(("mean", "alea", "epi"))}
    for key in ("mean", "alea", "epi"):
        for obj in range(x.shape[0]):
            p = ks_2samp(runs[True][key][:, obj], runs[False][key][:, obj]).pvalue
            assert p > 1e-4, (key, obj, p)
    assert np.all(runs[False]["epi"] > 1e-8)                     # the noise really matters here
    corr = {k: abs(np.corrcoef(runs[k]["mean"][:, 0], runs[k]["mean"][:, 1])[0, 1]) for k in runs}
    assert corr[False] > 0.3 > 0.2 > corr[True], corr


def test_reading_ahead_gives_the_same_chunks_and_closes_cleanly():
    from csst_sls_z.products import open_product
    with open_product(DATA / "golden_input.fits") as reader:
        plain = list(reader.iter_chunks(5))
        ahead = list(reader.iter_chunks(5, prefetch=True))
        assert [sl for sl, _ in plain] == [sl for sl, _ in ahead] and len(plain) == 5
        for (_, p), (_, q) in zip(plain, ahead):
            for band in p:
                for field in ("wave", "flux", "err", "offsets", "present"):
                    np.testing.assert_array_equal(getattr(p[band], field), getattr(q[band], field))
        it = reader.iter_chunks(5, prefetch=True)
        for _ in range(3):                               # a read of chunk 3 is now in flight
            next(it)
    # closed with the generator abandoned mid-way: the read in flight was waited for
    assert reader._fits is None and reader._inflight is None
    it.close()


def test_stage_reading_ahead_gives_the_same_catalog(tmp_path):
    import fitsio

    from csst_sls_z.stage import RedshiftStage
    stage = RedshiftStage(reference_dir=REFSET, catalog_only=True, overwrite=True, chunk_size=5, samples=20)
    cats = []
    for prefetch in (False, True):
        stage.prefetch = prefetch
        out = tmp_path / f"out_{prefetch}.fits"
        stage.process_file(DATA / "golden_input.fits", out)
        cats.append(fitsio.read(out, ext="SLS_REDSHIFT"))
    for name in cats[0].dtype.names:
        np.testing.assert_array_equal(cats[0][name], cats[1][name], err_msg=name)


def _without_checksums(header) -> str:
    header = header.copy()
    for key in ("CHECKSUM", "DATASUM"):
        header.remove(key, ignore_missing=True, remove_all=True)
    return header.tostring()


@pytest.mark.parametrize("var", [False, True])
def test_streamed_copy_is_the_mapped_copy(tmp_path, monkeypatch, var):
    """The input's extensions, copied in blocks from the reader's descriptor (issue 17: memory flat
    in file size), are byte for byte astropy's memory-mapped copy, with valid checksums."""
    import fitsio
    from astropy.io import fits

    from csst_sls_z.datamodel import empty_redshift_table
    from csst_sls_z.products import open_product, writer
    src = DATA / "golden_input.fits"
    if var:          # variable-length arrays: the data area has a heap
        src = tmp_path / "var.fits"
        with fits.open(DATA / "golden_input.fits") as hd:
            hdus = [fits.PrimaryHDU(header=hd[0].header.copy())]
            for hdu in hd[1:]:
                if hdu.name.startswith("SPEC_"):
                    cols = [fits.Column(name=c.name, format=c.format, array=hdu.data[c.name])
                            if c.name in ("OBJID", "RA", "DEC") else
                            fits.Column(name=c.name, format="PE()", unit=c.unit,
                                        array=[row[: 100 + 7 * k] for k, row in enumerate(hdu.data[c.name])])
                            for c in hdu.columns]
                    hdus.append(fits.BinTableHDU.from_columns(cols, name=hdu.name))
                else:
                    hdus.append(hdu.copy())
            fits.HDUList(hdus).writeto(src, checksum=True)
    monkeypatch.setattr(writer, "_COPY_BLOCK", 4096)       # many blocks, one of them short
    outs = {}
    for stream in (False, True):
        monkeypatch.setattr(writer, "STREAM_COPY", stream)
        with open_product(src) as reader:
            cat = empty_redshift_table(reader.n_objects)
            cat["OBJID"] = reader.objid
            outs[stream] = writer.write_redshift_product(tmp_path / f"out_{stream}.fits", src, cat,
                                                         [("ORIGIN", "test", "")], source=reader)
    with fits.open(outs[False]) as a, fits.open(outs[True]) as b:
        assert [h.name for h in a] == [h.name for h in b]
        for ha, hb in zip(a, b):
            assert hb.verify_checksum() == 1 and hb.verify_datasum() == 1
            assert ha.header["DATASUM"] == hb.header["DATASUM"]
            assert _without_checksums(ha.header) == _without_checksums(hb.header)
    with fitsio.FITS(str(outs[False])) as fa, fitsio.FITS(str(outs[True])) as fb:
        raw_a, raw_b = outs[False].read_bytes(), outs[True].read_bytes()
        for x, y in zip(fa[1:], fb[1:]):
            oa, ob = x.get_offsets(), y.get_offsets()
            assert raw_a[oa["data_start"]:oa["data_end"]] == raw_b[ob["data_start"]:ob["data_end"]]
