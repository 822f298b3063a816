import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TQDM_DISABLE", "1")

# No test reads data installed on the machine (Debian's dataset-fashion-mnist under /usr/share/datasets):
# `make test` passes on a fresh clone with PyPI access only. Tests of Fashion-MNIST code paths use the
# small IDX files of the `fashion_mnist_idx` fixture. The checks of the real files are marked
# `real_data` and run only by `make test-real-data` (REPAIR_JAX_REAL_DATA=1), which searches the system.
REAL_DATA = os.environ.get("REPAIR_JAX_REAL_DATA") == "1"
if not REAL_DATA:
    os.environ["REPAIR_JAX_SYSTEM_DATA"] = ""
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


def pytest_collection_modifyitems(config, items):
    """``real_data`` tests (the real Fashion-MNIST files) are deselected unless REPAIR_JAX_REAL_DATA=1
    (``make test-real-data``), and then they are the only ones run."""
    keep, drop = [], []
    for item in items:
        (keep if (item.get_closest_marker("real_data") is not None) == REAL_DATA else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def write_idx(path, arr) -> None:
    """Writes ``arr`` (uint8) as an IDX file, the format of the MNIST / Fashion-MNIST files
    (gzipped when ``path`` ends in .gz), for :func:`repair_jax.data.read_idx` to read back."""
    import gzip
    import struct

    arr = np.asarray(arr, np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
        f.write(header + arr.tobytes())


@pytest.fixture(scope="session")
def fashion_mnist_idx_dir(tmp_path_factory):
    """A small Fashion-MNIST-shaped data set written as the four IDX files (gzipped, the names of the
    real ones): 1,200 training and 200 test 28x28 images, 10 classes, each class a fixed random
    template plus noise (learnable, so smoke runs train a model that is better than chance)."""
    d = tmp_path_factory.mktemp("fashion_mnist_idx")
    rng = np.random.default_rng(0)
    templates = rng.uniform(0, 1, (10, 7, 7)).repeat(4, axis=1).repeat(4, axis=2)  # blocky 28x28 patterns
    for prefix, n in (("train", 1200), ("t10k", 200)):
        y = rng.permutation(np.arange(n) % 10)
        x = np.clip(templates[y] * 200 + rng.normal(0, 40, (n, 28, 28)), 0, 255).astype(np.uint8)
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", y)
    return d


@pytest.fixture
def fashion_mnist_idx(fashion_mnist_idx_dir, monkeypatch):
    """``load_dataset("fashion_mnist")`` in this test reads :func:`fashion_mnist_idx_dir`'s IDX files
    (through the real IDX loader, found by ``$REPAIR_JAX_DATA``)."""
    monkeypatch.setenv("REPAIR_JAX_DATA", str(fashion_mnist_idx_dir))
    return fashion_mnist_idx_dir


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
    from repair_jax.influence.full_batch import minimize_objective
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
