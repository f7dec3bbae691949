"""The Brian2 reference engine against the vectorized engine: same spikes, potentials, goodness
and FF weight updates on the same input spike trains."""
import numpy as np
import pytest

from spikeff import FFConfig, FFNetwork, NeuronConfig
from spikeff.encoding import ConcatSource, SpikeSource
from spikeff.engines import brian2_engine, get_engine, vectorized
from spikeff.events import EventSource, SpikeTrains
from spikeff.goodness import Goodness, available_goodness, get_goodness
from spikeff.learning import ff_loss
from spikeff.neuron import DiscreteLIF

pytestmark = pytest.mark.brian2
TOL = 1e-9


@pytest.fixture
def target():
    old = brian2_engine.TARGET
    yield lambda name: setattr(brian2_engine, "TARGET", name)
    brian2_engine.TARGET = old


def two_layer_problem(seed=0, B=5):
    rng = np.random.default_rng(seed)
    W = [rng.normal(0.05, 0.5, (24, 18)), rng.normal(0.05, 0.5, (12, 24))]
    b = [rng.normal(0, 0.05, 24), rng.normal(0, 0.05, 12)]
    pos = SpikeSource(rng.random((B, 18)), "rate", 30, 1e-3, 400.0, seed=[seed, 1], dtype=np.float64)
    neg = SpikeSource(rng.random((B, 18)), "rate", 30, 1e-3, 400.0, seed=[seed, 2], dtype=np.float64)
    return W, b, pos, neg


def assert_same_phase(ref, res, learn):
    for l in range(len(ref.goodness)):
        np.testing.assert_array_equal(res.record["spikes"][l], ref.record["spikes"][l])
        np.testing.assert_allclose(res.record["v"][l], ref.record["v"][l], rtol=0, atol=TOL)
        np.testing.assert_allclose(res.goodness[l], ref.goodness[l], rtol=0, atol=TOL)
        np.testing.assert_allclose(res.neuron_goodness[l], ref.neuron_goodness[l], rtol=0, atol=TOL)
        np.testing.assert_array_equal(res.spike_counts[l], ref.spike_counts[l])
        if learn:
            np.testing.assert_allclose(res.grads[l][0], ref.grads[l][0], rtol=0, atol=TOL)
            np.testing.assert_allclose(res.grads[l][1], ref.grads[l][1], rtol=0, atol=TOL)
    np.testing.assert_array_equal(res.record["input"], ref.record["input"])


def phases_then_replay_agree(engine, W, b, lif, g, both):
    """The phases of ``both`` and then their replay with FF modulators, on ``engine`` and on the
    vectorized engine: the same phase results; returns the replay's (ref, res)."""
    ref = vectorized.run_phase(W, b, lif, g, both, chunk_steps=7, record=True)
    res = engine(W, b, lif, g, both, record=True)
    assert_same_phase(ref, res, learn=False)
    mods = [np.concatenate(ff_loss(*both.split(gl), "threshold", float(gl.mean()), 1.0)[1:])
            for gl in ref.goodness]
    ref = vectorized.run_phase(W, b, lif, g, both, chunk_steps=7, modulators=mods, record=True)
    res = engine(W, b, lif, g, both, modulators=mods, record=True)
    assert_same_phase(ref, res, learn=True)
    return ref, res


def run_both(W, b, lif, g, src, modulators=None):
    ref = vectorized.run_phase(W, b, lif, g, src, chunk_steps=7, modulators=modulators, record=True)
    res = brian2_engine.run_phase(W, b, lif, g, src, chunk_steps=7, modulators=modulators, record=True)
    return ref, res


@pytest.mark.parametrize("refractory", [0.0, 2e-3])
def test_training_step_matches_vectorized(target, refractory):
    """Positive and negative phase of one FF step, then their replays with the FF modulators."""
    target("numpy")
    W, b, pos, neg = two_layer_problem()
    lif = DiscreteLIF.from_config(NeuronConfig(refractory=refractory))
    g = get_goodness("energy_relu")
    ref_pos, res_pos = run_both(W, b, lif, g, pos)
    ref_neg, res_neg = run_both(W, b, lif, g, neg)
    assert_same_phase(ref_pos, res_pos, learn=False)
    assert_same_phase(ref_neg, res_neg, learn=False)
    m_pos, m_neg = [], []
    for gp, gn in zip(ref_pos.goodness, ref_neg.goodness):
        theta = 0.5 * (gp.mean() + gn.mean())       # keeps the sigmoids away from saturation
        _, mp, mn = ff_loss(gp, gn, "threshold", theta, 1.0)
        m_pos.append(mp)
        m_neg.append(mn)
    assert all((m < 0).all() for m in m_pos) and all((m > 0).all() for m in m_neg)  # both signs
    for src, mods in ((pos, m_pos), (neg, m_neg)):
        ref, res = run_both(W, b, lif, g, src, modulators=mods)
        assert_same_phase(ref, res, learn=True)
        for l in range(2):
            assert np.abs(ref.grads[l][0]).max() > 1e-3 and np.abs(ref.grads[l][1]).max() > 1e-3
    # not trivial: both layers spike, but are not saturated
    for l in range(2):
        rate = ref_pos.record["spikes"][l].mean()
        assert 0.05 < rate < 0.7, rate
        if refractory:
            assert rate <= 1 / 3 + 1e-12   # one spike, then two steps held at reset


@pytest.mark.parametrize("goodness_name", available_goodness())
def test_goodness_variants_match(target, goodness_name):
    """Every registered goodness (its Brian2 expression) gives the same G and updates."""
    target("numpy")
    W, b, pos, _ = two_layer_problem(seed=1, B=3)
    lif = DiscreteLIF.from_config(NeuronConfig())
    g = get_goodness(goodness_name)
    mods = [np.array([1.0, -2.0, 0.5]), np.array([-1.0, 0.3, 2.0])]
    ref, res = run_both(W, b, lif, g, pos, modulators=mods)
    assert_same_phase(ref, res, learn=True)


def test_learning_only_some_layers_and_no_bias(target):
    target("numpy")
    W, _, pos, _ = two_layer_problem(seed=2, B=4)
    lif = DiscreteLIF.from_config(NeuronConfig())
    g = get_goodness("energy_relu")
    ref, res = run_both(W, [None, None], lif, g, pos, modulators=[None, np.linspace(-1, 1, 4)])
    assert res.grads[0] is None
    assert_same_phase(ref, res, learn=False)
    np.testing.assert_allclose(res.grads[1][0], ref.grads[1][0], rtol=0, atol=TOL)


def test_fit_with_brian2_engine_equals_vectorized(digits):
    """A (short) training run with engine="brian2" gives the weights of the vectorized engine."""
    X, y = digits.X_train[:48], digits.y_train[:48]
    cfg = FFConfig(hidden_sizes=(16, 12), n_steps=10, epochs=1, batch_size=24, dtype="float64",
                   readout=False, seed=4)
    nets = {e: FFNetwork(cfg, engine=e).fit(X, y, n_classes=10) for e in ("vectorized", "brian2")}
    for Wv, Wb in zip(nets["vectorized"].weights_, nets["brian2"].weights_):
        np.testing.assert_allclose(Wb, Wv, rtol=0, atol=1e-9)
    init = FFNetwork(cfg).initialize(X.shape[1], 10).weights_
    assert not np.allclose(nets["brian2"].weights_[0], init[0])   # it did learn
    # one persistent network for the model; 2 batches x (positive, negative, and their replays)
    [bnet] = nets["brian2"]._engine().networks
    assert bnet.epochs_run == 2 * 4 and bnet.R == 24


def test_record_comes_from_brian2_monitors(digits):
    """FFNetwork.simulate(record=True) (what 'spikeff plot' draws) on the brian2 engine reads a
    SpikeMonitor and a StateMonitor per layer, and matches the vectorized engine."""
    cfg = FFConfig(hidden_sizes=(16, 12), n_steps=10, dtype="float64", readout=False, seed=4)
    nets = {e: FFNetwork(cfg, engine=e).initialize(digits.X_train.shape[1], 10) for e in ("vectorized", "brian2")}
    recs = {e: n.simulate(digits.X_test[:2], labels=digits.y_test[:2], seed=1) for e, n in nets.items()}
    for l in range(2):
        np.testing.assert_array_equal(recs["brian2"].record["spikes"][l], recs["vectorized"].record["spikes"][l])
        np.testing.assert_allclose(recs["brian2"].record["v"][l], recs["vectorized"].record["v"][l], atol=TOL)
    assert recs["vectorized"].record["spikes"][0].any()
    [bnet] = nets["brian2"]._engine().networks
    assert bnet.record and [type(m).__name__ for m in bnet.s_mons + bnet.v_mons] == \
        ["SpikeMonitor", "SpikeMonitor", "StateMonitor", "StateMonitor"]


def test_registry_and_bad_input(target):
    assert get_engine("brian2") is brian2_engine.run_phase
    W, b, pos, _ = two_layer_problem(B=2)
    lif = DiscreteLIF.from_config(NeuronConfig())
    g = get_goodness("energy_relu")
    with pytest.raises(ValueError, match="weights\\[1\\] must have shape"):
        brian2_engine.run_phase([W[0], W[1].T], b, lif, g, pos)
    with pytest.raises(ValueError, match="modulators\\[0\\] must have shape"):
        brian2_engine.run_phase(W, b, lif, g, pos, modulators=[np.ones(3), None])
    with pytest.raises(ValueError, match="no Brian2 expression"):
        brian2_engine.run_phase(W, b, lif, Goodness("custom", np.abs, np.sign), pos)
    target("cpp")
    with pytest.raises(ValueError, match="choose one of \\['numpy', 'cython', 'cpp_standalone'\\]"):
        brian2_engine.run_phase(W, b, lif, g, pos)


def _compiler_or_skip():
    import shutil
    if not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        pytest.skip("cpp_standalone needs a C++ compiler (g++, c++ or clang++ on PATH); none found")


@pytest.mark.parametrize("target_name", [
    "numpy",
    pytest.param("cython", marks=pytest.mark.slow),
    pytest.param("cpp_standalone", marks=pytest.mark.slow)])
def test_phases_are_run_epochs_of_one_network(target_name, request, monkeypatch):
    """One FF step as train_batch asks it (positive and negative phase side by side, then both
    replayed with modulators) on each code generation target: every phase is its own run() epoch
    of one persistent network, from rest; spikes identical, v, goodness, updates within 1e-9.
    A second step with new weights and new input reuses the network (no rebuild, no recompile)."""
    if target_name == "cython":
        pytest.importorskip("Cython")
    if target_name == "cpp_standalone":
        _compiler_or_skip()
        # the build is cached across test runs (Brian2 rewrites only changed files, make only
        # recompiles those); the first build compiles (minutes on a busy 2-core machine)
        monkeypatch.setattr(brian2_engine, "BUILD_DIR", str(request.config.cache.mkdir("brian2_standalone")))
    W, b, pos, neg = two_layer_problem(B=3)
    lif = DiscreteLIF.from_config(NeuronConfig(refractory=2e-3))
    g = get_goodness("energy_relu")
    engine = brian2_engine.Brian2Engine(target=target_name)
    for step in range(2):
        both = ConcatSource([pos, neg])
        ref, res = phases_then_replay_agree(engine, W, b, lif, g, both)
        assert np.abs(ref.grads[0][0]).max() > 1e-3
        [net] = engine.networks                     # one network, 3 replicas: one phase per epoch
        assert net.R == 3 and net.epochs_run == 4 * (step + 1)
        # runtime targets: input spikes from a SpikeGeneratorGroup; standalone: from a TimedArray
        assert type(net.groups[0]).__name__ == ("NeuronGroup" if target_name == "cpp_standalone"
                                                else "SpikeGeneratorGroup")
        build = net.build_seconds
        W = [w - 0.1 * gr[0] for w, gr in zip(W, ref.grads)]   # new weights, new input spikes
        pos, neg = (SpikeSource(s.x[::-1].copy(), "rate", 30, 1e-3, 400.0, seed=[7, k], dtype=np.float64)
                    for k, s in enumerate((pos, neg)))
    assert engine.networks[0].build_seconds == build
    # three phases in one call (cpp_standalone: two runs of its two-epoch program, the second padded
    # with a silent epoch), only the second layer learning, no biases
    three = ConcatSource([pos, neg, pos])
    mods = [None, np.linspace(-1, 1, 9)]
    ref = vectorized.run_phase(W, [None, None], lif, g, three, chunk_steps=7, modulators=mods, record=True)
    res = engine(W, [None, None], lif, g, three, modulators=mods, record=True)
    assert res.grads[0] is None
    assert_same_phase(ref, res, learn=False)
    np.testing.assert_allclose(res.grads[1][0], ref.grads[1][0], rtol=0, atol=TOL)
    np.testing.assert_allclose(res.grads[1][1], ref.grads[1][1], rtol=0, atol=TOL)
    assert np.abs(ref.grads[1][0]).max() > 1e-3
    [net] = engine.networks
    assert net.epochs_run == 4 * 2 + 3 and net.build_seconds == build
    if target_name == "cpp_standalone":
        assert net.binary_runs == 2 * 2 + 2


@pytest.mark.parametrize("learning, fold_steps", [("dense", None), ("events", None), ("events", 20), ("events", 7),
                                                   ("events", 1), ("events", 64)])
def test_update_forms_agree(learning, fold_steps, monkeypatch):
    """The event-driven update (a fold every ``fold_steps`` steps plus an event per presynaptic
    spike) and the dense one (every synapse, every step) give the vectorized engine's updates. T =
    30: with 7 (and 20) steps per fold the epochs (phases) start within a fold; with 64
    every epoch's update is all in its last fold, with 1 there is a fold every step."""
    monkeypatch.setattr(brian2_engine, "LEARNING", learning)
    monkeypatch.setattr(brian2_engine, "FOLD_STEPS", fold_steps)
    W, b, pos, neg = two_layer_problem(seed=5, B=3)
    lif = DiscreteLIF.from_config(NeuronConfig())
    engine = brian2_engine.Brian2Engine(target="numpy")
    ref, res = phases_then_replay_agree(engine, W, b, lif, get_goodness("energy_relu"), ConcatSource([pos, neg]))
    [net] = engine.networks
    assert net.events == (learning == "events")
    assert net.fold_steps == (fold_steps or brian2_engine.fold_steps(lif))
    ops = {o.name for obj in net.net.objects for o in [obj, *obj.contained_objects]}
    assert ("synapses0_fold" in ops) == net.events and ("synapses0_learn" in ops) != net.events
    for l in range(2):
        assert np.abs(ref.grads[l][0]).max() > 1e-3


def test_fold_steps_bound_the_factors(monkeypatch):
    """The default fold is the longest whose factors a**-k stay within FOLD_MAX_FACTOR."""
    for taus in [(5e-3, 20e-3), (20e-3, 5e-3), (1e-3, 10e-3), (50e-3, 100e-3)]:
        lif = DiscreteLIF.from_config(NeuronConfig(tau_syn=taus[0], tau_mem=taus[1]))
        K, a = brian2_engine.fold_steps(lif), min(lif.a_mem, lif.a_syn)
        assert a ** -K <= brian2_engine.FOLD_MAX_FACTOR and (K == 1 or a ** -(K + 1) > brian2_engine.FOLD_MAX_FACTOR)
    assert brian2_engine.fold_steps(DiscreteLIF.from_config(NeuronConfig())) == 10    # tau_syn 5 ms, dt 1 ms
    monkeypatch.setattr(brian2_engine, "FOLD_STEPS", 0)
    with pytest.raises(ValueError, match="fold"):
        brian2_engine.fold_steps(DiscreteLIF.from_config(NeuronConfig()))


def test_events_need_distinct_decays():
    """The event-driven sums divide by a_mem - a_syn: equal time constants use the dense update."""
    assert brian2_engine.uses_events(DiscreteLIF.from_config(NeuronConfig()), "events")
    assert not brian2_engine.uses_events(DiscreteLIF.from_config(NeuronConfig()), "dense")
    same = DiscreteLIF.from_config(NeuronConfig(tau_syn=0.02, tau_mem=0.02))
    assert not brian2_engine.uses_events(same, "events")
    instant = DiscreteLIF.from_config(NeuronConfig(tau_syn=0.0))       # a_syn = 0: a_syn**-k has no value
    assert instant.a_syn == 0 and not brian2_engine.uses_events(instant, "events")
    with pytest.raises(ValueError, match="events"):
        brian2_engine.uses_events(same, "sparse")
    W, b, pos, _ = two_layer_problem(seed=6, B=2)
    ref, res = run_both(W, b, same, get_goodness("energy_relu"), pos, modulators=[np.ones(2), -np.ones(2)])
    assert_same_phase(ref, res, learn=True)


def test_other_dt_and_time_constants(target):
    """The Brian2 clock and the decay factors follow NeuronConfig (dt = 0.5 ms here)."""
    target("numpy")
    W, b, pos, _ = two_layer_problem(seed=3, B=3)
    lif = DiscreteLIF.from_config(NeuronConfig(dt=5e-4, tau_syn=2e-3, tau_mem=8e-3, v_reset=-0.5))
    assert lif.dt == 5e-4 and lif.tau_syn == 2e-3 and lif.tau_mem == 8e-3
    ref, res = run_both(W, b, lif, get_goodness("energy_relu"), pos, modulators=[np.ones(3), -np.ones(3)])
    assert_same_phase(ref, res, learn=True)


def test_discrete_update_is_exact_solution_of_continuous_equations():
    """One step of tau_syn du/dt = -u and tau_mem dv/dt = -v + R (u + b) (u held over the step),
    integrated by Brian2's exact method, is the discrete update of spikeff.neuron."""
    import brian2 as b2
    b2.prefs.codegen.target = "numpy"
    lif = DiscreteLIF.from_config(NeuronConfig(tau_syn=3e-3, tau_mem=7e-3))
    R = 1 / (1 - lif.a_mem)
    u0, v0, bias = np.array([0.3, -1.2, 2.0]), np.array([0.1, 0.9, -0.4]), np.array([0.05, 0.0, -0.1])
    ns = {"tau_syn": lif.tau_syn * b2.second, "tau_mem": lif.tau_mem * b2.second, "R": R}
    grp = b2.NeuronGroup(3, """du/dt = -u/tau_syn : volt
                               dv/dt = (-v + R*(u_held + b))/tau_mem : volt
                               u_held : volt (constant)
                               b : volt (constant)""", method="exact", namespace=ns,
                         dt=lif.dt * b2.second)
    grp.u, grp.v, grp.u_held, grp.b = u0 * b2.mV, v0 * b2.mV, u0 * b2.mV, bias * b2.mV
    b2.Network(grp).run(lif.dt * b2.second)
    np.testing.assert_allclose(grp.u[:] / b2.mV, lif.a_syn * u0, rtol=1e-12)
    np.testing.assert_allclose(grp.v[:] / b2.mV, lif.a_mem * v0 + u0 + bias, rtol=1e-12, atol=1e-12)


# -- event input: a SpikeGeneratorGroup ------------------------------------------------------------
def event_phases(spikes_pos, spikes_neg, n_classes=3, seed=0):
    """Positive and negative phase of event input (SpikeTrains) with the FF label channels."""
    B = len(spikes_pos)
    labels = np.arange(B) % n_classes
    pos = EventSource(spikes_pos, labels, n_classes, 2, 1.0, 300.0, 1e-3, seed=[seed, 1], dtype=np.float64)
    neg = EventSource(spikes_neg, (labels + 1) % n_classes, n_classes, 2, 1.0, 300.0, 1e-3, seed=[seed, 2],
                      dtype=np.float64)
    return pos, neg


def assert_events_match_through_spike_generator(pos, neg, target_name, seed=0):
    """An FF step on event input (positive and negative phase, each its own run() epoch, then both
    replayed with the FF modulators, then an optimizer step and the same again): spikes identical
    to the vectorized engine, v, goodness and updates within 1e-9; the input group is a
    SpikeGeneratorGroup whose spikes (set_spikes) are the epoch's event spikes."""
    import brian2 as b2
    rng = np.random.default_rng(seed)
    M0 = pos.shape[1]
    W = [rng.normal(0.1, 0.6, (16, M0)), rng.normal(0.1, 0.6, (10, 16))]
    b = [rng.normal(0, 0.05, 16), rng.normal(0, 0.05, 10)]
    lif = DiscreteLIF.from_config(NeuronConfig(refractory=2e-3))
    g = get_goodness("energy_relu")
    engine = brian2_engine.Brian2Engine(target=target_name)
    both = ConcatSource([pos, neg])
    for step in range(2):
        ref, res = phases_then_replay_agree(engine, W, b, lif, g, both)
        for l in range(2):
            assert ref.record["spikes"][l].any() and np.abs(ref.grads[l][0]).max() > 1e-4
        [net] = engine.networks
        gen = net.groups[0]
        assert isinstance(gen, b2.SpikeGeneratorGroup)
        assert net.epochs_run == 4 * (step + 1)         # positive, negative and their replays
        # the last epoch (the negative replay) fed exactly the negative phase's input spikes
        T, x_neg = both.n_steps, ref.record["input"][:, len(pos.spikes):]       # (T, B, M0)
        assert net.R == x_neg.shape[1] and x_neg[:, :, :pos.spikes.n_channels].any()  # events, not only labels
        steps, idx = np.nonzero(x_neg.reshape(T, -1))
        np.testing.assert_array_equal(np.asarray(gen.neuron_index[:]), idx)
        t_steps = np.rint(np.asarray(gen.spike_time[:]) / lif.dt).astype(np.int64)
        np.testing.assert_array_equal(t_steps, (net.epochs_run - 1) * T + steps)   # epoch's start + step
        W = [w - 0.5 * gr[0] for w, gr in zip(W, ref.grads)]     # the learning step
        b = [c - 0.5 * gr[1] for c, gr in zip(b, ref.grads)]


@pytest.mark.parametrize("target_name", ["numpy", pytest.param("cython", marks=pytest.mark.slow)])
def test_event_list_input_is_a_spike_generator_group(target_name):
    """Events given as a (sample, step, channel) list (no tonic needed)."""
    if target_name == "cython":
        pytest.importorskip("Cython")
    rng = np.random.default_rng(3)
    B, T, M = 4, 20, 12
    spikes = []
    for k in range(2):
        n = 150
        sample, step, channel = rng.integers(0, B, n), rng.integers(0, T, n), rng.integers(0, M, n)
        spikes.append(SpikeTrains.from_indices(sample, step, channel, B, T, M))
    assert_events_match_through_spike_generator(*event_phases(*spikes), target_name)


def test_tonic_events_feed_a_spike_generator_group():
    """Event streams in tonic's format (EventList, binned by tonic's ToFrame)."""
    pytest.importorskip("tonic")
    from spikeff.events import EventList, synthetic_events
    ev, _ = synthetic_events(8, n_classes=3, sensor_size=(4, 3, 2), duration_us=20_000, rate_hz=250, seed=2)
    el = EventList(ev, sensor_size=(4, 3, 2))
    pos, neg = (el[k::2].to_spikes(20, 1000.0) for k in range(2))
    assert pos.matrix.nnz > 0 and neg.matrix.nnz > 0
    assert_events_match_through_spike_generator(*event_phases(pos, neg), "numpy", seed=1)


def test_fit_on_spike_tensor_with_brian2_equals_vectorized():
    """FFNetwork.fit on a (T, B, M) spike tensor: the Brian2 engine's persistent network takes the
    events through its SpikeGeneratorGroup and learns the vectorized engine's weights."""
    import brian2 as b2
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 24)
    lit = (np.arange(15)[None, :] % 3) == y[:, None]
    x = (rng.random((12, 24, 15)) < np.where(lit, 0.4, 0.05)[None]).astype(np.float32)
    cfg = FFConfig(hidden_sizes=(14, 10), n_steps=12, epochs=1, batch_size=12, label_repeat=2,
                   dtype="float64", readout=False, seed=2)
    nets = {e: FFNetwork(cfg, engine=e).fit(x, y, n_classes=3) for e in ("vectorized", "brian2")}
    for Wv, Wb in zip(nets["vectorized"].weights_, nets["brian2"].weights_):
        np.testing.assert_allclose(Wb, Wv, rtol=0, atol=1e-9)
    init = FFNetwork(cfg).initialize(15, 3).weights_
    assert not np.allclose(nets["brian2"].weights_[0], init[0])   # it did learn
    [bnet] = nets["brian2"]._engine().networks
    assert isinstance(bnet.groups[0], b2.SpikeGeneratorGroup) and bnet.epochs_run == 2 * 4
