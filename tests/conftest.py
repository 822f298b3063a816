import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# XLA's persistent compilation cache, fresh for each session (removed at exit) and inherited by the
# subprocesses the tests start (CLI runs, notebook kernels): the suite builds many jitted steps of the
# same computation (a fine-tuning step per method, rho and seed; the same smoke model in several
# configs), and compiling each once roughly halves the smoke runs on 2 CPU cores. Results are the
# same: a cache hit returns the executable the same computation compiles to.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="repair_jax_test_xla_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# The suite is compile-bound: hundreds of small jitted programs (a smoke run's train step, a model's
# init) each run a handful of times, and on CPU most of each compile is LLVM's optimisation passes,
# which buy nothing for a program run a few times (measured: the influence-LOO, README and robustness
# smoke tests take 40% less CPU time without them). This changes the machine code, not the
# computation: values agree with the default build to float rounding, and every test compares with a
# tolerance or within one process. The committed results were produced at the default level;
# REPAIR_JAX_TEST_XLA_OPT=1 runs the suite at it. Subprocesses and notebook kernels inherit the flag.
if os.environ.get("REPAIR_JAX_TEST_XLA_OPT") != "1" and "xla_backend_optimization_level" not in os.environ.get(
        "XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

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


@pytest.fixture(scope="session")
def logreg(digits):
    """L2-regularized multinomial logistic regression on 240 real digits, fit to convergence (float64):
    (loss, params, train, test (60 points), l2, the dense Hessian). Shared by the influence tests."""
    import jax
    import jax.numpy as jnp

    from repair_jax.influence import ClassifierLoss, hessian_matrix
    from repair_jax.influence.loo import minimize_objective
    from repair_jax.models import create_model, init_variables

    with jax.enable_x64(True):
        m = create_model("mlp", 10, hidden=())
        v = init_variables(m, jax.random.PRNGKey(0), (8, 8, 1))
        p0 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), v["params"])
        loss = ClassifierLoss(m.apply)
        train = {"x": jnp.asarray(digits.train.x[:240], jnp.float64), "y": jnp.asarray(digits.train.y[:240])}
        test = {"x": jnp.asarray(digits.test.x[:60], jnp.float64), "y": jnp.asarray(digits.test.y[:60])}
        l2 = 0.05
        params, gnorm = minimize_objective(loss, p0, train, l2=l2)
        assert gnorm < 1e-6
        hess = hessian_matrix(loss, params, train, l2=l2)  # built from HVPs; checked in test_hvp_...
    return loss, params, train, test, l2, hess


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def run_notebook(monkeypatch):
    """``run_notebook(name, **env) -> (outputs, text)``: executes ``notebooks/<name>`` at smoke size
    (``REPAIR_JAX_SMOKE=1`` plus ``env``) in a kernel started at the repository root, and returns the
    code cells' outputs and their concatenated stream text."""
    from pathlib import Path

    def run(name: str, timeout: int = 600, **env):
        import nbformat
        from nbclient import NotebookClient

        root = Path(__file__).resolve().parents[1]
        nb = nbformat.read(root / "notebooks" / name, as_version=4)
        monkeypatch.setenv("REPAIR_JAX_SMOKE", "1")
        monkeypatch.setenv("PYTHONPATH", str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        for key, value in env.items():
            monkeypatch.setenv(key, str(value))
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(root)}}).execute()
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        return outputs, "".join(o.get("text", "") for o in outputs)

    return run
