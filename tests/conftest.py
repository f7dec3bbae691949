import numpy as np
import pytest

from spikeff import FFConfig


@pytest.fixture
def small_config():
    """A small, fast float64 network for tests."""
    return FFConfig(hidden_sizes=(40, 30), n_steps=12, epochs=1, batch_size=32, dtype="float64",
                    chunk_steps=5, label_repeat=2, readout=True, seed=3)


@pytest.fixture(scope="session")
def digits():
    from spikeff.data import load_digits_dataset
    return load_digits_dataset()
