"""Multi-host for real: two processes on localhost (4 fake CPU devices each) joined by
`jax.distributed.initialize` run a sharded train step and an RL update over the 8 global devices, and get
what one process with 8 devices gets; they checkpoint into one shared directory and restore it. They also run
one whole RL step (sampler, slot scheduler, envs, update) over the two processes. Plus the rules that decide
when a process joins a job."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from alejax.parallel import exchange_objects, make_mesh, row_owners, to_host
from alejax.parallel.distributed import distributed_settings, maybe_initialize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "multihost_worker.py")
TIMEOUT_S = 600  # a loaded 2-core CI box; an idle one finishes in well under a minute


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _spawn(out: str, log: str, n_devices: int, *extra_args: str, **jax_env) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "ALEJAX_", "XLA_"))}
    env.update(
        # Compiling dominates these short runs: unoptimised CPU code compiles in about half the time, and the
        # runs compared with each other are built alike.
        XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices} --xla_backend_optimization_level=0 "
        "--xla_llvm_disable_expensive_passes=true",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=ROOT,
        **jax_env,
    )
    with open(log, "w") as f:
        return subprocess.Popen(
            [sys.executable, WORKER, "--out", out, *extra_args],
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


def _run_reference_and_two_processes(tmp_path, *args: str, two_process_args: tuple[str, ...] = ()):
    """The worker as one process with 8 devices (ref.npz) and as two joined processes with 4 devices each
    (p0.npz, p1.npz), all three at once; returns the three results."""
    port = _free_port()
    jobs = {
        "ref": _spawn(str(tmp_path / "ref.npz"), str(tmp_path / "ref.log"), 8, *args),
        **{
            f"p{i}": _spawn(
                str(tmp_path / f"p{i}.npz"),
                str(tmp_path / f"p{i}.log"),
                4,
                *args,
                *two_process_args,
                JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                JAX_NUM_PROCESSES="2",
                JAX_PROCESS_ID=str(i),
            )
            for i in range(2)
        },
    }
    deadline = time.time() + TIMEOUT_S
    try:
        for name, proc in jobs.items():
            rc = proc.wait(timeout=max(deadline - time.time(), 1))
            if rc != 0:
                tail = (tmp_path / f"{name}.log").read_text()[-4000:]
                pytest.fail(f"{name} exited with {rc}:\n{tail}")
    finally:
        for proc in jobs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [np.load(tmp_path / f"{name}.npz") for name in jobs]


def test_two_processes_equal_one_process(tmp_path):
    ref, *results = _run_reference_and_two_processes(
        tmp_path, two_process_args=("--checkpoint-dir", str(tmp_path / "checkpoints"))
    )
    assert int(ref["process_count"]) == 1
    # Each process fed its own half of the global batch, and both really were part of one 2-process job.
    assert [tuple(r["rows"]) for r in results] == [(0, 8), (8, 16)]
    assert [int(r["process_count"]) for r in results] == [2, 2]
    assert ref["metric:lm/grad_norm"] > 0 and ref["metric:rl/grad_norm"] > 0

    params = sorted(k for k in ref.files if k.startswith("param:"))
    metrics = sorted(k for k in ref.files if k.startswith("metric:"))
    assert len(params) > 5 and {"metric:lm/loss", "metric:rl/loss", "metric:rl/kl"} <= set(metrics)
    for result in results:
        assert sorted(result.files) == sorted(ref.files)
        assert int(result["step"]) == int(ref["step"]) == 2
        np.testing.assert_allclose(result["old_logp"], ref["old_logp"], rtol=1e-5, atol=1e-5)
        for key in metrics:
            np.testing.assert_allclose(result[key], ref[key], rtol=1e-5, atol=1e-6, err_msg=key)
        for key in params:
            # Adam steps of ~1e-3 on f32 values: reduction order across processes moves a few ulps (1.5e-6 seen
            # once with scanned layers); a wrong shard or a missing half of the batch moves them by ~1e-3.
            np.testing.assert_allclose(result[key], ref[key], rtol=1e-5, atol=5e-6, err_msg=key)
            assert result[key].shape == ref[key].shape
    # Both processes wrote their shards into one checkpoint and read back exactly what they saved.
    assert [float(r["checkpoint_mismatches"]) for r in results] == [0.0, 0.0]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
    # The two processes hold one global state: what each gathered is the same, bit for bit.
    for key in params:
        np.testing.assert_array_equal(results[0][key], results[1][key], err_msg=key)


def test_rl_step_with_rollout_on_two_processes_equals_one_process(tmp_path):
    """Sampler, scheduler and one RL step on a mesh spanning two processes: each process runs the envs of the
    rows its devices hold, reads device values only through `to_host`, and gets the trajectories (tokens, μ),
    metrics and updated parameters of one process with 8 devices."""
    ref, *results = _run_reference_and_two_processes(tmp_path, "--mode", "rollout")
    assert [int(r["process_count"]) for r in (ref, *results)] == [1, 2, 2]
    episodes = len(ref["reward"])
    # The rows whose KV lives on a process's devices have their envs there, and only there.
    assert [r["owned_rows"].tolist() for r in results] == [list(range(8)), list(range(8, 16))]
    served = [set(r["served_episodes"].tolist()) for r in results]
    assert not served[0] & served[1] and served[0] | served[1] == set(range(episodes))
    assert set(ref["served_episodes"].tolist()) == set(range(episodes))
    assert [r["exchanged_sizes"].tolist() for r in (ref, *results)] == [[3000], [3000, 6000], [3000, 6000]]
    assert 0 < ref["reward"].mean() < 1 and ref["metric:grad_norm"] > 0  # the update had a signal
    for result in results:
        # Same episodes token for token, with the same behaviour log-probs (a sharded sum's rounding apart).
        np.testing.assert_array_equal(result["tokens"], ref["tokens"])
        np.testing.assert_array_equal(result["loss_mask"], ref["loss_mask"])
        np.testing.assert_array_equal(result["reward"], ref["reward"])
        np.testing.assert_allclose(result["behaviour_logp"], ref["behaviour_logp"], rtol=1e-5, atol=1e-5)
        assert sorted(result.files) == sorted(ref.files)
        for key in (k for k in ref.files if k.startswith("metric:")):
            np.testing.assert_allclose(result[key], ref[key], rtol=1e-5, atol=1e-6, err_msg=key)
        for key in (k for k in ref.files if k.startswith("param:")):
            np.testing.assert_allclose(result[key], ref[key], rtol=1e-5, atol=5e-6, err_msg=key)


def test_host_reads_and_row_owners_on_one_process():
    """On one process the helpers are plain: `to_host` reads a sharded array (and a tree of them) as numpy,
    `exchange_objects` hands back this process's object, and every row's env is this process's."""
    mesh = make_mesh({"data": 2, "fsdp": -1})
    sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    x = jax.device_put(np.arange(16, dtype=np.int32), sharding)
    tokens, (count,) = to_host((x, [x[:4]]))
    assert (
        isinstance(tokens, np.ndarray)
        and tokens.tolist() == list(range(16))
        and count.tolist() == [0, 1, 2, 3]
    )
    assert exchange_objects({3: "observation"}) == [{3: "observation"}]
    assert row_owners(sharding, (16,)).tolist() == [0] * 16
    assert (
        row_owners(NamedSharding(mesh, PartitionSpec(None, ("data", "fsdp"))), (4, 16), axis=1).tolist()
        == [0] * 16
    )


# -- when does a process join? ------------------------------------------------------------------------


def test_single_process_is_a_no_op():
    assert distributed_settings(env={}) is None
    assert distributed_settings({"job": "pretrain"}, env={}) is None
    assert maybe_initialize(env={}) is False
    # One process named explicitly: still nothing to join.
    one = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "1", "JAX_PROCESS_ID": "0"}
    assert distributed_settings(env=one) is None


def test_explicit_environment():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.2:8476", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert distributed_settings(env=env) == {
        "coordinator_address": "10.0.0.2:8476",
        "num_processes": 4,
        "process_id": 3,
    }
    assert distributed_settings(env={**env, "ALEJAX_DISTRIBUTED": "0"}) is None


def test_tpu_vm_auto_detect_and_config_section():
    assert distributed_settings(env={"ALEJAX_DISTRIBUTED": "1"}) == {}  # JAX reads the TPU VM metadata
    config = {
        "distributed": {
            "coordinator_address": "w0:1234",
            "num_processes": 2,
            "process_id": 1,
            "enabled": True,
        }
    }
    assert distributed_settings(config, env={}) == {
        "coordinator_address": "w0:1234",
        "num_processes": 2,
        "process_id": 1,
    }
    assert distributed_settings({"distributed": {"enabled": False}}, env={"ALEJAX_DISTRIBUTED": "1"}) is None
    assert distributed_settings({"distributed": {"enabled": True}}, env={}) == {}
    assert distributed_settings({"distributed": {"enabled": "auto"}}, env={}) is None


@pytest.mark.parametrize(
    "env, message",
    [
        ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "missing \\['coordinator_address'\\]"),
        ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, "process_id"),
        ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"}, "two"),
        ({"JAX_COORDINATOR_ADDRESS": "host", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "port"),
        ({"ALEJAX_DISTRIBUTED": "maybe"}, "ALEJAX_DISTRIBUTED"),
    ],
)
def test_bad_settings_name_the_culprit(env, message):
    with pytest.raises(ValueError, match=message):
        distributed_settings(env=env)


def test_unknown_config_key_is_named():
    with pytest.raises(ValueError, match="coordinator"):
        distributed_settings({"distributed": {"coordinator": "h:1"}}, env={})
