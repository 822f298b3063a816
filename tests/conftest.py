import os

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    from repair_jax.data import load_dataset
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="session")
def trained_digits_mlp(digits):
    """A small MLP trained on digits once per session: (model, state, dataset)."""
    from repair_jax.train import TrainConfig, train_model
    cfg = TrainConfig(model="mlp", model_kwargs={"hidden": (64,)}, epochs=10, seed=0)
    model, state, history, ds = train_model(cfg, dataset=digits, progress=False)
    return model, state, ds


@pytest.fixture
def rng():
    return np.random.default_rng(0)
