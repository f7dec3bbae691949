"""The engine's fast paths give the same bits as the general ones: spikes written straight into the
input buffer (``chunks_into``), the fused membrane + goodness pass (per thread and per tile of
rows), and readout inference (the fused pass) against a recorded simulation (the unfused pass)."""
import numpy as np
import pytest

from spikeff import FFConfig, NeuronConfig
import spikeff.engines.vectorized as vec
from spikeff.encoding import ArraySource, ConcatSource, SpikeSource, chunks_into
from spikeff.engines.vectorized import grads_from_store, run_phase
from spikeff.goodness import get_goodness
from spikeff.network import FFNetwork
from spikeff.neuron import DiscreteLIF
from spikeff.readout import readout_features


def _via_buffer(source, chunk_steps, dtype=np.float32):
    B, M = source.shape
    buf = np.full((chunk_steps, B, M), 7, dtype=dtype)      # stale values must be overwritten
    got = []
    for k in chunks_into(source, chunk_steps, lambda k: buf[:k]):
        got.append(buf[:k].copy())
    return np.concatenate(got)


@pytest.mark.parametrize("chunk_steps", [4, 11, 20])
def test_chunks_into_equals_chunks(chunk_steps):
    rng = np.random.default_rng(0)
    sources = [SpikeSource(rng.random((6, 7)), "rate", 11, 1e-3, 500.0, seed=[1, 2]),
               SpikeSource(rng.random((6, 7)), "rate", 11, 1e-3, 800.0, seed=3, rows_per_noise=3),
               SpikeSource(rng.random((6, 7)) * (rng.random((6, 7)) > 0.3), "latency", 11, 1e-3, 500.0,
                           seed=4, latency_period=4),
               ArraySource((rng.random((11, 6, 7)) < 0.2).astype(np.float32))]
    sources.append(ConcatSource(sources[:]))
    for src in sources:
        ref = np.concatenate(list(src.chunks(chunk_steps)))
        assert ref.sum() > 0
        np.testing.assert_array_equal(_via_buffer(src, chunk_steps), ref)


def _net_inputs(rng, B=150, M=60, N=(500, 300), T=13):
    W = [rng.normal(0, 1.6 / np.sqrt(M), (N[0], M)).astype(np.float32),
         rng.normal(0, 1.6 / np.sqrt(N[0]), (N[1], N[0])).astype(np.float32)]
    b = [rng.normal(0, 0.05, N[0]).astype(np.float32), None]
    src = ConcatSource([SpikeSource(rng.random((B // 2, M)), "rate", T, 1e-3, 600.0, seed=[5, i])
                        for i in range(2)])
    return W, b, src


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("refractory", [0.0, 2e-3])
def test_fused_pass_equals_unfused(monkeypatch, threads, refractory):
    """Batches large enough for several threads' parts and several tiles per part (150 rows,
    tiles of 32), several chunks (13 steps by 5), kept rows crossing tile and part boundaries."""
    monkeypatch.setattr(vec, "n_threads", lambda: threads)
    rng = np.random.default_rng(threads)
    lif = DiscreteLIF.from_config(NeuronConfig(refractory=refractory))
    g = get_goodness("energy_relu")
    W, b, src = _net_inputs(rng)
    mods = [rng.normal(size=150), rng.normal(size=150)]
    keep = slice(37, 113)
    kept_mods = [m[keep] for m in mods]
    out = {}
    for fused in (True, False):
        monkeypatch.setattr(vec, "FUSED_PASS", fused)
        plain = run_phase(W, b, lif, g, src, 5)
        replay = run_phase(W, b, lif, g, src, 5, modulators=mods)
        first = run_phase(W, b, lif, g, src, 5, keep=keep)
        out[fused] = (plain, replay, first, grads_from_store(first.stored, kept_mods))
    (p1, r1, f1, s1), (p0, r0, f0, s0) = out[True], out[False]
    assert sum(int(c.sum()) for c in p1.spike_counts) > 1000 and p1.spike_counts[1].sum() > 100
    for l in range(2):
        for a, c in ((p1, p0), (r1, r0), (f1, f0), (p1, f1)):
            np.testing.assert_array_equal(a.goodness[l], c.goodness[l])
            np.testing.assert_array_equal(a.neuron_goodness[l], c.neuron_goodness[l])
            np.testing.assert_array_equal(a.spike_counts[l], c.spike_counts[l])
        for j in range(2):
            np.testing.assert_array_equal(r1.grads[l][j], r0.grads[l][j])
            np.testing.assert_array_equal(s1[l][j], s0[l][j])
        assert np.any(r1.grads[l][0] != 0)


def test_readout_inference_equals_recorded_simulation(digits):
    """``predict(method="readout")`` (the fused pass, no records) gives the same features and
    predictions as the general path: the same neutral-label sources simulated with records."""
    X, y = digits.X_train, digits.y_train
    cfg = FFConfig(hidden_sizes=(64, 48), n_steps=12, chunk_steps=5, batch_size=32, epochs=1,
                   readout=True, eval_batch_size=70, max_rate=600.0, label_repeat=2, dtype="float32")
    net = FFNetwork(cfg).fit(X[:160], y[:160])
    Xt = X[160:400]
    fast = net.readout_features(Xt)
    general = np.concatenate([readout_features(net._run(src, record=True).neuron_goodness)
                              for _, src in net.neutral_sources(Xt)])
    assert fast.shape == (240, 112) and np.any(fast != 0)
    np.testing.assert_array_equal(fast, general)
    np.testing.assert_array_equal(net.predict(Xt, "readout"), net.readout_.predict(general))


def test_silent_steps_are_left_out_exactly(monkeypatch):
    """The GEMM rows of leading steps whose traces are all zero (a phase starts from rest) are left
    out: the same values up to rounding (float64: to 1e-12), the same spikes, and the store still
    equals the replay bit for bit."""
    E = np.zeros((4, 3, 5))
    assert vec._silent_steps(E) == 4
    E[2, 1, 3] = 1e-30
    assert vec._silent_steps(E) == 2
    E[0, 0, 0] = 1.0
    assert vec._silent_steps(E) == 0
    rng = np.random.default_rng(4)
    lif = DiscreteLIF.from_config(NeuronConfig())
    g = get_goodness("energy_relu")
    W, _, src = _net_inputs(rng, B=40, M=30, N=(50, 40), T=9)
    W = [w.astype(np.float64) for w in W]
    mods = [rng.normal(size=40), rng.normal(size=40)]
    out = {}
    for skip in (True, False):
        monkeypatch.setattr(vec, "SKIP_SILENT_STEPS", skip)
        rec = run_phase(W, [None, None], lif, g, src, 4, record=True)
        replay = run_phase(W, [None, None], lif, g, src, 4, modulators=mods)
        first = run_phase(W, [None, None], lif, g, src, 4, keep=slice(None))
        stored = grads_from_store(first.stored, mods)
        for l in range(2):
            np.testing.assert_array_equal(stored[l][0], replay.grads[l][0])
        out[skip] = (rec, replay)
    (r1, g1), (r0, g0) = out[True], out[False]
    assert r1.record["spikes"][0].sum() > 50 and r1.record["spikes"][1].sum() > 20
    for l in range(2):
        # a layer l steps above the input cannot fire before step l: its first l + 1 currents are 0
        assert not r1.record["v"][l][:l + 1].any() and r1.record["v"][l][l + 1].any()
        np.testing.assert_array_equal(r1.record["spikes"][l], r0.record["spikes"][l])
        np.testing.assert_allclose(r1.record["v"][l], r0.record["v"][l], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(g1.grads[l][0], g0.grads[l][0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_random_fill_in_parts_is_the_same_stream(monkeypatch, threads):
    """Uniform numbers drawn in parts by advanced copies of the generator: the same numbers, and the
    generator ends in the same state, as one ``rng.random`` call."""
    import spikeff.encoding as enc
    from spikeff import runs
    monkeypatch.setattr(runs, "engine_threads", lambda: threads)
    monkeypatch.setattr(enc, "_MIN_PARALLEL_DRAWS", 100)
    ref = np.random.default_rng([3, 1])
    rng = np.random.default_rng([3, 1])
    for shape in [(7, 13, 11), (1, 1, 5), (2, 300)]:
        got = enc.random_fill(rng, np.empty(shape))
        np.testing.assert_array_equal(got, ref.random(shape))
    np.testing.assert_array_equal(rng.random(9), ref.random(9))


def test_work_buffers_are_reused_per_thread_and_bounded(monkeypatch):
    import threading
    a = vec.work_buffer(("t", 0), (3, 4), np.float32)
    a[...] = 5
    b = vec.work_buffer(("t", 0), (3, 4), np.float32, zero=True)
    assert b is a and not b.any()
    assert vec.work_buffer(("t", 1), (3, 4), np.float32) is not a          # another name
    assert vec.work_buffer(("t", 0), (3, 5), np.float32) is not a          # another shape
    other = []
    t = threading.Thread(target=lambda: other.append(vec.work_buffer(("t", 0), (3, 4), np.float32)))
    t.start()
    t.join()
    assert other[0] is not a                                                 # per thread
    monkeypatch.setattr(vec, "WORK_BUFFER_BYTES", 100)
    big = vec.work_buffer(("t", 2), (30,), np.float64)                      # 240 bytes: the others go
    assert vec.work_buffer(("t", 2), (30,), np.float64) is big
    assert vec.work_buffer(("t", 0), (3, 4), np.float32) is not a
    monkeypatch.setattr(vec, "REUSE_BUFFERS", False)
    assert vec.work_buffer(("t", 2), (30,), np.float64) is not big


def test_reused_buffers_give_the_same_results(monkeypatch):
    """A call on buffers a previous call left dirty (other data, other modulators, kept rows)
    gives the bits of a call on fresh buffers."""
    rng = np.random.default_rng(9)
    lif = DiscreteLIF.from_config(NeuronConfig(refractory=2e-3))
    g = get_goodness("energy_relu")
    W, b, src = _net_inputs(rng, B=60, M=40, N=(70, 50), T=11)
    _, _, other = _net_inputs(rng, B=60, M=40, N=(70, 50), T=11)
    mods = [rng.normal(size=60), rng.normal(size=60)]

    def calls():
        first = run_phase(W, b, lif, g, src, 4, keep=slice(10, 50))
        return (run_phase(W, b, lif, g, src, 4, modulators=mods), first,
                grads_from_store(first.stored, [m[10:50] for m in mods]))
    monkeypatch.setattr(vec, "REUSE_BUFFERS", False)
    fresh = calls()
    monkeypatch.setattr(vec, "REUSE_BUFFERS", True)
    run_phase(W, b, lif, g, other, 4, modulators=[m[::-1] for m in mods], keep=slice(None))
    reused = calls()
    for l in range(2):
        for j in range(2):
            np.testing.assert_array_equal(fresh[0].grads[l][j], reused[0].grads[l][j])
            np.testing.assert_array_equal(fresh[2][l][j], reused[2][l][j])
        np.testing.assert_array_equal(fresh[1].neuron_goodness[l], reused[1].neuron_goodness[l])
        np.testing.assert_array_equal(fresh[1].spike_counts[l], reused[1].spike_counts[l])


def test_kept_rows_with_a_step(monkeypatch):
    """Kept rows given as a slice with a step: the same stored update as the unfused path."""
    monkeypatch.setattr(vec, "n_threads", lambda: 2)
    rng = np.random.default_rng(5)
    lif = DiscreteLIF.from_config(NeuronConfig())
    g = get_goodness("energy_relu")
    W, b, src = _net_inputs(rng)
    keep = slice(5, 140, 3)
    mods = [rng.normal(size=len(range(150)[keep])), None]
    got = {}
    for fused in (True, False):
        monkeypatch.setattr(vec, "FUSED_PASS", fused)
        got[fused] = grads_from_store(run_phase(W, b, lif, g, src, 5, keep=keep).stored, mods)
    assert got[True][1] is None and np.any(got[True][0][0] != 0)
    for j in range(2):
        np.testing.assert_array_equal(got[True][0][j], got[False][0][j])


class _Sums:
    """The fields of a learning layer that :func:`vec._accumulate` and :func:`vec._grad_result` use."""

    def __init__(self, N, M, dtype):
        self.xp, self.np, self.dtype, self.n_chunks, self.share = np, True, np.dtype(dtype), 0, None
        self.dW = np.full((N, M), np.nan)                   # stale values must not leak
        self.dW_chunk = np.full((N, M), np.nan, dtype=dtype)
        self.db = np.zeros(N)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("silent", ["none", "first chunk", "all"])
@pytest.mark.parametrize("n_chunks", [1, 2, 3])
def test_update_sums_chunks_as_float64(dtype, silent, n_chunks):
    """The update of a phase is the float64 sum of its chunks' GEMMs cast to the weights' dtype;
    with one chunk (with rows) it is that chunk's GEMM itself, without a float64 pass."""
    rng = np.random.default_rng(5)
    k, B, N, M = 3, 4, 5, 6
    acc = _Sums(N, M, dtype)
    ref = np.zeros((N, M))
    for c in range(n_chunks):
        post = rng.normal(size=(k, B, N)).astype(dtype)
        Ev = rng.normal(size=(k * B, M)).astype(dtype)
        if silent == "all" or (silent == "first chunk" and c == 0):
            Ev[:] = 0
        else:
            ref += np.matmul(post.reshape(k * B, N).T, Ev)       # the chunk's GEMM in dtype, summed in float64
        vec._accumulate(acc, post, Ev, k, np.ones(k))
    dW, db = vec._grad_result(acc)
    assert dW.dtype == dtype and db.dtype == dtype
    np.testing.assert_array_equal(dW, ref.astype(dtype))
    if silent == "all":
        assert not dW.any()
    dW2, _ = vec._grad_result(acc)
    assert dW2 is not dW                                          # new arrays, not the work buffers


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_adam_is_the_same_arithmetic(monkeypatch, dtype):
    """Adam's numpy step per cached block in the engine threads gives the same bits as its
    array-API form, for arrays smaller and larger than a block and not a multiple of it."""
    import spikeff.learning as learning
    monkeypatch.setattr(learning, "ADAM_BLOCK", 1 << 10)
    rng = np.random.default_rng(6)
    shapes = [(70, 33), (3000,), (5,)]
    start = [rng.normal(size=s).astype(dtype) for s in shapes]
    got = {}
    for fast in (True, False):
        monkeypatch.setattr(learning, "FAST_ADAM", fast)
        params = [p.copy() for p in start]
        opt = learning.Adam(params, lr=0.003)
        for i in range(4):
            opt.step(params, [np.random.default_rng(i).normal(size=s).astype(dtype) * 10.0 ** -i for s in shapes])
        got[fast] = params + opt.m + opt.v
    assert not np.array_equal(got[True][0], start[0])
    for a, b in zip(got[True], got[False]):
        np.testing.assert_array_equal(a, b)


def _shared_phases(rng, copies, B=24, n=40, M=50, T=9, dtype=np.float64):
    """A neutral-like source and a ConcatSource of ``copies`` parts with the same image (first n
    channels) and seed but other label channels, and the SharedInput they share."""
    from spikeff.encoding import SharedInput
    img = rng.random((B, n))
    parts = []
    for c in range(copies + 1):
        lab = rng.random((B, M - n)) * (rng.random((B, M - n)) < 0.4)
        parts.append(SpikeSource(np.concatenate([img, lab], axis=1), "rate", T, 1e-3, 700.0,
                                 seed=[3, 1], dtype=dtype))
    share = SharedInput(n)
    first = parts[0]
    first.shared_input = share
    return first, ConcatSource(parts[1:], share.for_copies(copies)), share


@pytest.mark.parametrize("chunk_steps", [9, 4])
@pytest.mark.parametrize("copies", [2, 3])
def test_shared_input_currents_and_updates(chunk_steps, copies):
    """Phases that draw the same spikes on the image channels (``shared_input_noise``): the same
    spikes as drawing them per part; the engine's image current once per sample (taken over from
    the batch's first phase) and its update from the summed factors equal the plain GEMMs to
    rounding (float64: 1e-12), and store still equals replay bit for bit."""
    rng = np.random.default_rng(7)
    lif = DiscreteLIF.from_config(NeuronConfig())
    g = get_goodness("energy_relu")
    W = [rng.normal(0, 2.5 / np.sqrt(50), (60, 50)), rng.normal(0, 2.0 / np.sqrt(60), (30, 60))]
    first, both, share = _shared_phases(rng, copies)
    spikes = both.all_steps()
    plain = ConcatSource(both.sources)
    np.testing.assert_array_equal(spikes, plain.all_steps())          # noise drawn once = drawn per part
    np.testing.assert_array_equal(_via_buffer(both, chunk_steps, np.float64), spikes)
    R = first.shape[0]
    assert spikes[:, :R, :40].sum() > 50
    for c in range(1, copies):
        np.testing.assert_array_equal(spikes[:, c * R:(c + 1) * R, :40], spikes[:, :R, :40])
    assert not np.array_equal(spikes[:, R:2 * R, 40:], spikes[:, :R, 40:])
    mods = [rng.normal(size=copies * R), rng.normal(size=copies * R)]
    run_phase(W, [None, None], lif, g, first, chunk_steps)                # fills share.currents
    assert share.currents
    ref = run_phase(W, [None, None], lif, g, plain, chunk_steps, record=True)
    got = run_phase(W, [None, None], lif, g, both, chunk_steps, record=True)
    for l in range(2):
        np.testing.assert_array_equal(got.record["spikes"][l], ref.record["spikes"][l])
        np.testing.assert_allclose(got.record["v"][l], ref.record["v"][l], rtol=1e-12, atol=1e-12)
    assert got.record["spikes"][1].sum() > 20
    replay_ref = run_phase(W, [None, None], lif, g, plain, chunk_steps, modulators=mods)
    replay = run_phase(W, [None, None], lif, g, both, chunk_steps, modulators=mods)
    kept = run_phase(W, [None, None], lif, g, both, chunk_steps, keep=slice(None))
    assert kept.stored.share is not None
    stored = grads_from_store(kept.stored, mods)
    for l in range(2):
        np.testing.assert_array_equal(stored[l][0], replay.grads[l][0])
        np.testing.assert_allclose(replay.grads[l][0], replay_ref.grads[l][0], rtol=1e-10, atol=1e-14)
    part = run_phase(W, [None, None], lif, g, both, chunk_steps, keep=slice(R, None))
    assert part.stored.share.copies == copies - 1      # the kept parts still share their image
    odd = run_phase(W, [None, None], lif, g, both, chunk_steps, keep=slice(1, None))
    assert odd.stored.share is None                   # not whole parts: the plain update


def test_shared_input_is_checked():
    """A SharedInput is refused for parts that do not draw the same image spikes."""
    from spikeff.encoding import SharedInput
    rng = np.random.default_rng(8)
    X = rng.random((4, 6))
    same = lambda seed, x=X: SpikeSource(x, "rate", 5, 1e-3, 500.0, seed=seed)
    ConcatSource([same(1), same(1)], SharedInput(6, 2))
    with pytest.raises(ValueError, match="same spikes"):
        ConcatSource([same(1), same(2)], SharedInput(6, 2))
    with pytest.raises(ValueError, match="same spikes"):
        ConcatSource([same(1), same(1, X[::-1])], SharedInput(3, 2))
    with pytest.raises(ValueError, match="same spikes"):
        ConcatSource([same(1), same(1)], SharedInput(6, 3))
