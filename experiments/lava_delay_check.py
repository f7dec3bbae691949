"""Check the inter-layer delay of Lava (LIF -> Dense -> LIF) against spikeff's model.

Builds an untrained 2-layer network with strong weights (so both layers spike), plays the same
input spikes through spikeff's vectorized engine and Lava's floating-point processes, and reports
for layer 2 which delay d (0, 1, 2 steps between layers) makes spikeff's recurrence, driven by
Lava's own layer-1 spikes, reproduce Lava's layer-2 potentials.

    PYTHONPATH=. python experiments/lava_delay_check.py
"""
import numpy as np

from spikeff import FFConfig, FFNetwork
from spikeff.export import lava as lx

net = FFNetwork(FFConfig(hidden_sizes=(30, 20), n_steps=40, dtype="float64", weight_init=3.0, seed=1))
net.initialize(12, 2)
rng = np.random.default_rng(0)
x = (rng.random((40, 3, 12 + 2)) < 0.3)
ref = lx.simulate(net, x, mode="floating_pt", backend="numpy")
got = lx.simulate(net, x, mode="floating_pt", backend="lava")
p = net.lif
for l in range(2):
    print(f"layer {l}: spikes lava {int(got['spikes'][l].sum())}, spikeff {int(ref['spikes'][l].sum())}, "
          f"identical {np.array_equal(got['spikes'][l], ref['spikes'][l])}, "
          f"max |dv| {np.abs(got['v'][l] - ref['v'][l]).max():.2e}")
# which delay explains layer 2 given Lava's layer-1 spikes?
s1 = got["spikes"][0].astype(float)
W = net.weights_[1]
for d in (0, 1, 2):
    u = np.zeros((3, 20)); v = np.zeros((3, 20)); err = 0.0
    for t in range(40):
        xin = s1[t - d] if t - d >= 0 else np.zeros_like(s1[0])
        u = p.a_syn * u + xin @ W.T
        v = p.a_mem * v + u
        err = max(err, np.abs(v - got["v"][1][t]).max())
        v = np.where(v > p.v_threshold, 0.0, v)
    print(f"delay {d} step(s) between layers: max |v - v_lava| = {err:.2e}")
