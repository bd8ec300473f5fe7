"""Env pools: worker processes (batching, timeouts, restarts, aborted episodes, clean shutdown), the thread
pool's hang timeout, and the factory a job calls."""

import os
import time

import pytest

from alejax.envs import StepResult, make
from alejax.envs.pools import ProcessEnvPool, RayEnvPool, ThreadEnvPool, make_env_pool, wait_all


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is gone for our purposes
    except FileNotFoundError:
        return False


def _wait_gone(pids, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


@pytest.fixture
def faulty_pool():
    pool = ProcessEnvPool("toy/faulty", num_workers=2, step_timeout_s=1.0, max_batch=8)
    yield pool
    pool.close()


def test_matches_in_process_env_and_batches(faulty_pool):
    # Same results as the env run in-process, across many concurrent episodes spread over workers.
    n = 24
    resets = wait_all([faulty_pool.reset(i, 100 + i) for i in range(n)], 30)
    assert [r.observation for r in resets] == [f"seed {100 + i}" for i in range(n)]
    steps = wait_all([faulty_pool.step(i, f"a{i}") for i in range(n)], 30)
    assert [s.observation for s in steps] == [f"1: a{i}" for i in range(n)]
    assert len({s.info["pid"] for s in steps}) == 2  # two workers, neither is this process
    assert os.getpid() not in {s.info["pid"] for s in steps}
    done = faulty_pool.step(3, "done").result(10)
    assert isinstance(done, StepResult) and done.reward == 1.0 and done.terminated


def test_env_exception_aborts_episode_but_keeps_worker(faulty_pool):
    faulty_pool.reset(0, 0).result(30)
    pid = faulty_pool.worker_pids()[0]
    result = faulty_pool.step(0, "raise").result(10)
    assert result.truncated and result.info["aborted"] and "raised on purpose" in result.info["error"]
    assert faulty_pool.worker_pids()[0] == pid and faulty_pool.restarts == 0


def test_crashed_worker_restarts_and_reports_every_affected_episode(faulty_pool):
    wait_all([faulty_pool.reset(i, i) for i in range(4)], 30)  # episodes 0, 2 on worker 0; 1, 3 on worker 1
    old_pids = faulty_pool.worker_pids()
    crashed = faulty_pool.step(0, "crash").result(10)
    assert crashed.info["aborted"] and "crashed" in crashed.info["error"]
    sibling = faulty_pool.step(2, "x").result(10)  # its env state died with the worker
    assert sibling.info["aborted"] and "lost its worker" in sibling.info["error"]
    assert faulty_pool.step(1, "x").result(10).observation == "1: x"  # other worker unaffected
    # The scheduler re-samples from the same seed: the episode works again on the restarted worker.
    assert faulty_pool.reset(0, 0).result(30).observation == "seed 0"
    assert faulty_pool.step(0, "y").result(10).observation == "1: y"
    assert faulty_pool.restarts == 1 and faulty_pool.worker_pids()[0] != old_pids[0]
    assert not _wait_gone([old_pids[0]])


def test_hung_step_times_out_without_wedging(faulty_pool):
    wait_all([faulty_pool.reset(i, i) for i in range(2)], 30)
    start = time.monotonic()
    hung = faulty_pool.step(0, "hang")
    other = faulty_pool.step(1, "fine")
    assert other.result(10).observation == "1: fine"  # the other worker keeps serving meanwhile
    result = hung.result(10)
    assert result.info["aborted"] and result.info["timeout"] and result.truncated
    assert 0.9 < time.monotonic() - start < 5
    assert faulty_pool.reset(0, 5).result(30).observation == "seed 5"


def test_step_before_reset_is_aborted_not_raised(faulty_pool):
    assert faulty_pool.step(99, "x").result(1).info["aborted"]


def test_close_leaves_no_processes():
    pool = ProcessEnvPool("toy/faulty", num_workers=3, step_timeout_s=5.0)
    wait_all([pool.reset(i, i) for i in range(3)], 30)
    grandchildren = [pool.step(i, "spawn").result(10).info["child_pid"] for i in range(3)]
    workers = pool.worker_pids()
    assert len(workers) == 3 and all(_alive(p) for p in workers + grandchildren)
    pool.close()
    assert _wait_gone(workers + grandchildren) == []
    with pytest.raises(RuntimeError):
        pool.reset(0, 0)


def test_timeout_kills_the_workers_children():
    with ProcessEnvPool("toy/faulty", num_workers=1, step_timeout_s=1.0) as pool:
        pool.reset(0, 0).result(30)
        child = pool.step(0, "spawn").result(10).info["child_pid"]
        assert pool.step(0, "hang").result(10).info["timeout"]
        assert _wait_gone([child]) == []


def test_thread_pool_same_interface():
    pool = ThreadEnvPool(lambda: make("keydoor/short"))
    try:
        first = pool.reset(0, 3).result()
        env = make("keydoor/short")
        assert first.observation == env.reset(3)[0]
        results = [pool.step(0, a).result() for a in env.optimal_actions()]
        assert results[-1].reward == 1.0
    finally:
        pool.close()


def test_thread_pool_hang_times_out_to_an_aborted_episode():
    pool = ThreadEnvPool(lambda: make("toy/faulty"), max_concurrency=2, step_timeout_s=0.5)
    try:
        wait_all([pool.reset(i, i) for i in range(2)], 10)
        start = time.monotonic()
        hung = pool.step(0, "hang")
        assert pool.step(1, "fine").result(5).observation == "1: fine"  # the other thread keeps serving
        result = hung.result(5)
        assert result.truncated and result.info["aborted"] and result.info["timeout"]
        assert 0.4 < time.monotonic() - start < 3
        # The hung episode is dropped; a new thread took its thread's place, so both threads serve again.
        assert "hung" in pool.step(0, "x").result(1).info["error"]
        pool.release(0)
        assert [r.observation for r in wait_all([pool.reset(i, 10 + i) for i in (2, 3)], 5)] == [
            "seed 12",
            "seed 13",
        ]
        assert [s.observation for s in wait_all([pool.step(i, "y") for i in (1, 2, 3)], 5)] == [
            "2: y",
            "1: y",
            "1: y",
        ]
    finally:
        start = time.monotonic()
        pool.close()
    assert time.monotonic() - start < 1  # close does not wait for the hung call


def test_thread_pool_without_timeout_reports_env_errors():
    pool = ThreadEnvPool(lambda: make("toy/faulty"), max_concurrency=1)
    try:
        assert pool.reset(0, 0).result(5).observation == "seed 0"
        result = pool.step(0, "raise").result(5)
        assert result.truncated and result.info["aborted"] and "raised on purpose" in result.info["error"]
        broken = ThreadEnvPool(lambda: 1 / 0, max_concurrency=1)
        assert "ZeroDivisionError" in broken.reset(0, 0).result(5).info["error"]
        broken.close()
    finally:
        pool.close()
    with pytest.raises(RuntimeError):
        pool.reset(1, 1)


def test_make_env_pool_builds_each_kind_from_config_values():
    thread = make_env_pool("thread", "toy/echo", {"horizon": 2}, 4, step_timeout_s=5.0)
    try:
        assert isinstance(thread, ThreadEnvPool) and thread.step_timeout_s == 5.0
        assert thread.reset(0, 7).result(5).observation == "seed 7"
        thread.step(0, "a").result(5)
        assert thread.step(0, "b").result(5).truncated  # env_kwargs reached the env: horizon 2
    finally:
        thread.close()
    with make_env_pool("process", "toy/echo", {}, 1, step_timeout_s=5.0, max_batch=4) as process:
        assert isinstance(process, ProcessEnvPool) and process.max_batch == 4
        assert process.reset(0, 1).result(30).observation == "seed 1"
        assert process.step(0, "hi").result(10).observation == "1: hi"
    with pytest.raises(ValueError, match="unknown option"):
        make_env_pool("thread", "toy/echo", {}, 2, max_batch=4)
    with pytest.raises(ValueError, match="not one of thread, process, ray"):
        make_env_pool("threads", "toy/echo", {}, 2)


def test_ray_backend():
    pytest.importorskip("ray", reason="ray is optional and not installed; RayEnvPool is untested here")
    pool = RayEnvPool("toy/echo", num_workers=2, step_timeout_s=5.0)
    try:
        assert pool.reset(0, 1).result(60).observation == "seed 1"
        assert pool.step(0, "hi").result(60).observation == "1: hi"
    finally:
        pool.close()
