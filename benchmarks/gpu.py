"""The accelerator suite (issue 27): one call that measures on a GPU (or TPU) the figures that the committed
CPU results lack, each part written to ``OUT/<name>_gpu.json``.

``python -m benchmarks --gpu [--data-dir DIR] [--budget SECONDS] [--only a,b] [--out DIR]`` (``make gpu``)
refuses, with one line and exit status 2, where JAX's backend is not a GPU or TPU.
``python -m benchmarks --gpu --rehearse`` runs the same parts through the same code at small sizes on any
backend (this CPU), into a fresh temporary directory (never over ``benchmarks/results``), so that the rare
GPU call does not fail on a typo; ``tests/test_benchmarks_gpu.py`` runs it.

The parts, in this order, each the benchmark module's own ``run`` with size arguments (:data:`PARTS`):

* ``influence_projection``: projection influence at 60,000 x 10,000 (all Fashion-MNIST training images
  against all test images; the 2-core CPU took 205 s, peak 6.3 GB, ``influence_projection.json``);
* ``influence_ekfac``: EK-FAC fit and scores of the MLP at N = 10,000 (the CPU's largest row) and 60,000;
* ``per_example_grads``: ours against ``vmap(grad)``, the batch gradient and torch.func, MLP, CNN, ResNet-18;
* ``train_throughput``: training examples/s of the CNN and ResNet-18, ours and torch's;
* ``irepair``: I-REPAIR against retraining;
* ``hypergradient``: model guiding's hypergradient and the bilevel update at 60,000 points.

Each part runs in its own process (its own device memory; one that fails or hangs loses nothing of the
others) under a time limit: the whole suite fits ``--budget`` seconds (default :data:`BUDGET_S`, for one
H100 call of at most 8 minutes with its start), each part given its share of it (:data:`PARTS`) plus what
the parts before it left unused. A part that fails, runs out of time or cannot run (no Fashion-MNIST for the
two influence parts: give ``--data-dir`` or ``$REPAIR_JAX_DATA``) still writes its JSON, with ``status``
and ``reason``. torch's figures are measured where torch's CUDA build imports (``torch.cuda.is_available()``),
on the same GPU; elsewhere the record's ``torch`` field says why not and ours stand alone (the rehearsal runs
torch on the CPU, to exercise its code). The child processes get ``XLA_PYTHON_CLIENT_PREALLOCATE=false``
(unless set), so that JAX leaves GPU memory to torch and to the projection benchmark's own subprocess.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "benchmarks" / "results"
BUDGET_S = 450.0  # the whole suite: one 10-minute device call leaves room for the machine's start


@dataclasses.dataclass(frozen=True)
class Part:
    module: str
    share_s: float  # of BUDGET_S
    gpu: dict  # run()'s arguments on the accelerator
    rehearse: dict  # and at rehearsal size
    needs_fashion_mnist: bool = False  # its GPU figure is the CPU figure's size only on the real data
    torch: bool = False  # takes torch_device


PARTS = {
    "influence_projection": Part("benchmarks.influence_projection", 90,
                                 gpu={"memory": False}, rehearse={"quick": True, "memory": False},
                                 needs_fashion_mnist=True),
    "influence_ekfac": Part("benchmarks.influence_ekfac", 80,
                            gpu={"sizes": (10000, 60000), "models": ("mlp",), "versus_cg": False},
                            rehearse={"quick": True, "sizes": (1300,), "models": ("mlp",), "versus_cg": False},
                            needs_fashion_mnist=True),
    "per_example_grads": Part("benchmarks.per_example_grads", 90,
                              gpu={"cases": ("mlp", "cnn", "resnet18")},
                              rehearse={"quick": True, "cases": ("mlp", "cnn", "resnet18")}, torch=True),
    "train_throughput": Part("benchmarks.train_throughput", 90,
                             gpu={"models": {"cnn": ({}, 16384), "resnet18": ({}, 4096)}},
                             rehearse={"quick": True, "models": {"cnn": ({"width": 8}, 160),
                                                                 "resnet18": ({"width": 8}, 160)}}, torch=True),
    "irepair": Part("benchmarks.irepair", 50, gpu={"quick": False}, rehearse={"quick": True}),
    "hypergradient": Part("benchmarks.hypergradient", 50, gpu={"quick": False},
                          rehearse={"quick": True, "inner_iterations": (10, 50)}),
}


PACKAGES = ("jax", "jaxlib", "flax", "optax", "jaxopt", "dm-pix", "torch")  # versions recorded (None: missing)


def package_versions() -> dict:
    """The installed version of each of :data:`PACKAGES`, None where missing (the GPU image lacks jaxopt and
    dm-pix unless their wheels are carried: docs/gpu.md)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def torch_status(rehearse: bool) -> tuple[str | None, dict]:
    """(the device torch's figures are measured on or None, the record's ``torch`` field)."""
    try:
        import torch
    except ImportError as e:
        return None, {"available": False, "reason": f"torch not importable ({e}); ours alone"}
    if torch.cuda.is_available():
        return "cuda", {"available": True, "version": torch.__version__, "device": "cuda",
                        "device_name": torch.cuda.get_device_name(0)}
    if rehearse:
        return "cpu", {"available": True, "version": torch.__version__, "device": "cpu",
                       "note": "rehearsal: torch CUDA not available, torch run on the CPU to exercise its code"}
    return None, {"available": False, "version": torch.__version__,
                  "reason": "torch CUDA not available (torch.cuda.is_available() is False: a CPU build of torch "
                            "or no CUDA runtime for it); ours alone"}


def _call(part: Part, rehearse: bool, torch_device: str | None) -> dict:
    kwargs = dict(part.rehearse if rehearse else part.gpu)
    if part.torch:
        kwargs["torch_device"] = torch_device
    return kwargs


def _run_child(cmd: list[str], timeout: float, env: dict | None = None) -> tuple[str, str]:
    """(status, reason) of ``cmd`` run in its own process group, killed with its children after ``timeout`` s."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return "timeout", f"stopped after its time limit of {timeout:.0f} s"
    if proc.returncode:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        return "failed", (lines[-1] if lines else f"exit status {proc.returncode}") + "\n" + "\n".join(lines[-30:])
    return "ok", ""


def _run_part(name: str, call: dict, limit: float, env: dict | None = None) -> tuple[str, str, dict]:
    """(status, reason, figures) of part ``name`` run with ``call`` in a child process with ``env``."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "figures.json"
        status, reason = _run_child([sys.executable, "-m", "benchmarks.gpu", name, json.dumps(call), str(result)],
                                    limit, env)
        return status, reason, json.loads(result.read_text()) if status == "ok" else {}


def run_suite(out: str | Path | None = None, rehearse: bool = False, only=None, data_dir: str | None = None,
              budget_s: float = BUDGET_S) -> dict:
    """Runs the parts (all, or ``only``) and writes ``OUT/<name>_gpu.json`` for each; returns the records."""
    from repair_jax.errors import UserError

    # read when JAX starts its GPU client (the first device query below): this process too leaves the GPU's
    # memory to the parts (a default only; the test suite's conftest sets the same)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    from benchmarks.__main__ import machine_info
    from repair_jax.data import find_fashion_mnist_dir
    from repair_jax.io import write_json

    names = only or list(PARTS)
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        raise UserError(f"unknown GPU suite part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    if budget_s <= 0:
        raise UserError(f"--budget must be > 0 seconds, got {budget_s}")
    backend = jax.default_backend()
    if backend not in ("gpu", "tpu") and not rehearse:
        raise UserError(f"--gpu needs a GPU or TPU, but JAX's backend here is {backend} (install JAX's CUDA "
                        "build; --rehearse runs the suite at small sizes on any backend)")
    if out is None:
        out = tempfile.mkdtemp(prefix="repair_jax_gpu_rehearsal_") if rehearse else COMMITTED
    out = Path(out)
    if rehearse and out.resolve() == COMMITTED.resolve():
        raise UserError(f"--rehearse writes small-size figures: give an --out other than {COMMITTED}")
    fmnist = find_fashion_mnist_dir(data_dir)  # data_dir, else $REPAIR_JAX_DATA, else Debian's directory
    given = {Path(data_dir).resolve(), (Path(data_dir) / "fashion-mnist").resolve()} if data_dir is not None else None
    if given is not None and (fmnist is None or fmnist.resolve() not in given):
        raise UserError(f"--data-dir {data_dir} holds no Fashion-MNIST IDX files (train-images-idx3-ubyte, "
                        "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each may be .gz)")
    env = dict(os.environ)  # the parts' environment
    if fmnist is not None:
        env["REPAIR_JAX_DATA"] = str(fmnist.resolve())  # the parts' processes find it there
    torch_device, torch_field = torch_status(rehearse)
    device = jax.devices()[0]
    common = {"suite": "gpu", "rehearsal": rehearse, "quick": rehearse, "device_kind": device.device_kind,
              "backend": backend, "jax_version": jax.__version__,
              "fashion_mnist_dir": str(fmnist) if fmnist else None,
              "xla_python_client_preallocate": env["XLA_PYTHON_CLIENT_PREALLOCATE"],
              "packages": package_versions(), "machine": machine_info()}
    scale = budget_s / sum(PARTS[n].share_s for n in names)
    t_suite = time.perf_counter()
    records = {}
    for i, name in enumerate(names):
        part = PARTS[name]
        reserved = scale * sum(PARTS[n].share_s for n in names[i + 1:])  # kept for the parts after this one
        limit = max(budget_s - (time.perf_counter() - t_suite) - reserved, 0.0)
        call = _call(part, rehearse, torch_device)
        t0 = time.perf_counter()
        figures: dict = {}
        torch_rec = torch_field if part.torch else {"note": "no torch comparison in this part"}
        if part.needs_fashion_mnist and fmnist is None and not rehearse:
            status, reason = "skipped", ("Fashion-MNIST IDX files not found (give --data-dir or $REPAIR_JAX_DATA; "
                                         "docs/gpu.md says how to carry them): the CPU figure is on the real data")
        elif limit < 1:
            status, reason = "skipped", "the suite's time budget was spent by the parts before it"
        else:
            status, reason, figures = _run_part(name, call, limit, env)
            left = limit - (time.perf_counter() - t0)
            if status == "failed" and call.get("torch_device") is not None and left >= 1:
                # torch took the process down (e.g. two CUDA libraries in one process): once more, ours alone
                torch_rec = {**torch_field, "failure": "the part failed with torch and was run again without "
                                                      "it: " + reason[:2000]}
                call = {**call, "torch_device": None}
                status, reason, figures = _run_part(name, call, left, env)
        record = {"benchmark": name, "status": status, **({"reason": reason} if reason else {}),
                  "call": call, "time_limit_s": limit, "figures": figures, **common, "torch": torch_rec,
                  "wall_time": time.perf_counter() - t0, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_json(out / f"{name}_gpu.json", record)
        print(f"{name}: {status} in {record['wall_time']:.1f} s (limit {limit:.0f} s)"
              + (f": {reason.splitlines()[0]}" if reason else ""), flush=True)
        records[name] = record
    print(f"GPU suite ({'rehearsal, ' if rehearse else ''}{device.device_kind}): {time.perf_counter() - t_suite:.1f} s"
          f" in all; JSON in {out}", flush=True)
    return records


def _part_main(name: str, call: str, result: str) -> None:
    """One part in this process: ``run(**call)`` of its module, its figures written to ``result``."""
    from repair_jax.io import write_json

    figures = importlib.import_module(PARTS[name].module).run(**json.loads(call))
    write_json(result, figures)


if __name__ == "__main__":
    _part_main(*sys.argv[1:])
