"""Hybrid-image negatives (unsupervised FF) and single-phase updates ("sleep")."""
import numpy as np
import pytest

from spikeff import FFConfig, FFNetwork
from spikeff.encoding import NEUTRAL
from spikeff.negatives import hybrid_images, image_shape_of, smooth_masks


def test_smooth_masks_are_binary_with_large_regions():
    rng = np.random.default_rng(0)
    m = smooth_masks(200, (28, 28), rng)
    assert set(np.unique(m)) <= {0.0, 1.0}
    assert 0.3 < m.mean() < 0.7
    same = np.mean(m[:, :, 1:] == m[:, :, :-1])      # neighbours agree far more than random bits (0.5)
    assert same > 0.85
    raw = rng.integers(0, 2, (200, 28, 28))
    assert np.mean(raw[:, :, 1:] == raw[:, :, :-1]) < 0.55


def test_hybrid_images_mix_two_images_pixelwise():
    rng = np.random.default_rng(1)
    X = rng.random((16, 64))
    H = hybrid_images(X, np.random.default_rng(2))
    assert H.shape == X.shape
    for i in range(len(X)):
        from_self = np.isclose(H[i], X[i])
        others = [j for j in range(len(X)) if j != i and np.all(from_self | np.isclose(H[i], X[j]))]
        assert len(others) == 1                    # exactly one partner image, never itself
        assert 0 < from_self.sum() < 64            # both images contribute
    H1 = hybrid_images(X[:1], np.random.default_rng(3))      # lone image: mixed with its mirror
    assert H1.shape == (1, 64) and not np.allclose(H1, X[:1])
    assert image_shape_of(64) == (8, 8) and image_shape_of(784) == (28, 28) and image_shape_of(10) == (10,)


def test_hybrid_negatives_train_without_labels(digits):
    cfg = FFConfig(hidden_sizes=(30,), n_steps=10, epochs=1, batch_size=32, dtype="float64",
                   negatives="hybrid", predict_method="readout", readout=True, seed=0)
    net = FFNetwork(cfg)
    net.initialize(64, 10)
    X, y = digits.X_train[:8], digits.y_train[:8]
    y_pos, X_neg, y_neg = net.negative_data(X, y, [0, 0], np.random.default_rng(0))
    assert np.all(y_pos == NEUTRAL) and np.all(y_neg == NEUTRAL)
    assert not np.allclose(X_neg, X)
    net.fit(digits.X_train[:200], digits.y_train[:200], digits.X_test[:50], digits.y_test[:50])
    m = net.history_[-1]
    assert "val_acc_readout" in m and "val_acc_goodness" not in m
    with pytest.raises(ValueError, match="hybrid"):
        FFConfig(negatives="hybrid", predict_method="goodness")


@pytest.mark.parametrize("phase,sign", [("positive", 1), ("negative", -1)])
def test_train_phase_moves_goodness_of_that_phase(digits, phase, sign):
    cfg = FFConfig(hidden_sizes=(30, 20), n_steps=10, dtype="float64", learning_rate=0.02, seed=1,
                   goodness_threshold=50.0 if phase == "positive" else 0.0)
    net = FFNetwork(cfg)
    net.initialize(64, 10)
    X, y = digits.X_train[:32], digits.y_train[:32]
    before = net.goodness(X, y, seed=5).mean(axis=0)
    w0 = [W.copy() for W in net.weights_]
    for k in range(5):
        net.train_phase(X, y, [0, k], phase)
    after = net.goodness(X, y, seed=5).mean(axis=0)
    assert np.all(sign * (after - before) > 0)
    assert all(not np.allclose(W, W0) for W, W0 in zip(net.weights_, w0))


def test_train_phase_needs_the_threshold_loss(digits):
    net = FFNetwork(FFConfig(hidden_sizes=(10,), n_steps=5, loss="symba"))
    net.initialize(64, 10)
    with pytest.raises(ValueError, match="threshold"):
        net.train_phase(digits.X_train[:4], digits.y_train[:4], [0], "positive")


def test_negative_data_readout_hard_uses_the_logits(digits):
    net = FFNetwork(FFConfig(hidden_sizes=(10,), n_steps=5, negatives="readout_hard", readout=True))
    net.initialize(64, 10)
    X, y = digits.X_train[:20], digits.y_train[:20]
    logits = np.full((20, 10), -50.0)
    logits[:, 3] = 50.0                      # label 3 dominates: every sample not of class 3 gets 3
    y_pos, X_neg, y_neg = net.negative_data(X, y, [0], np.random.default_rng(0), logits)
    assert np.all(y_pos == y) and X_neg is X
    assert np.all(y_neg[y != 3] == 3) and np.all(y_neg != y)
    with pytest.raises(ValueError, match="logits"):
        net.negative_data(X, y, [0], np.random.default_rng(0))
