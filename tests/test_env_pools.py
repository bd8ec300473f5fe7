"""Env pools: worker processes and Ray actors under the same tests (batching, timeouts, restarts, aborted
episodes, clean shutdown, released envs closed in their worker: flat over 1,000 episodes, 1,000 real terminal
episodes included), warm sandboxes under every pool, the thread pool's hang timeout and abandoned threads, the
pool chosen by a job's `env_pool` config, and hung / crashing envs inside a real RL step.

The env classes here are passed to worker pools as factories: the workers import this module for them,
so it imports nothing heavy at the top (the RL pieces are imported inside the tests that use them). The Ray
tests share one local Ray instance per module and skip without ray."""

import concurrent.futures
import os
import shutil
import sys
import tempfile
import threading
import time

import pytest

from alejax.envs import StepResult, make
from alejax.envs.base import register
from alejax.envs.pools import (
    EnvPoolConfig,
    ProcessEnvPool,
    RayEnvPool,
    ThreadEnvPool,
    env_pool_from_config,
    make_env_pool,
    pool_stats,
    wait_all,
)
from alejax.envs.toolcall import format_tool_call


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


# -- process and Ray pools: the same tests on both ------------------------------------------------------
@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance for the module (starting Ray costs seconds); skipped without ray."""
    ray = pytest.importorskip("ray", reason="ray is optional (pip install 'alejax[ray]')")
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "RAY_USAGE_STATS_ENABLED")}
    # Actors unpickle this module's env classes: they need the test's import path, as process workers get.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module", params=["process", "ray"])
def pool_kind(request):
    """Module scope, so pytest runs every process-pool test first, then every Ray one (Ray starts once)."""
    if request.param == "ray":
        request.getfixturevalue("ray_session")
    return request.param


def _worker_pool(kind: str, env, env_kwargs=None, workers: int = 2, **options):
    """A process or Ray pool with the same settings (Ray actors: half a CPU each, so 3 fit in num_cpus=2)."""
    if kind == "process":
        return ProcessEnvPool(env, env_kwargs, num_workers=workers, **options)
    return RayEnvPool(env, env_kwargs, num_workers=workers, actor_options={"num_cpus": 0.5}, **options)


@pytest.fixture
def faulty_pool(pool_kind):
    pool = _worker_pool(pool_kind, "toy/faulty", step_timeout_s=1.0)
    yield pool
    pool.close()


def test_matches_in_process_env_and_batches(faulty_pool):
    # Same results as the env run in-process, across many concurrent episodes spread over workers.
    n = 24
    resets = wait_all([faulty_pool.reset(i, 100 + i) for i in range(n)], 60)
    assert [r.observation for r in resets] == [f"seed {100 + i}" for i in range(n)]
    steps = wait_all([faulty_pool.step(i, f"a{i}") for i in range(n)], 30)
    assert [s.observation for s in steps] == [f"1: a{i}" for i in range(n)]
    assert len({s.info["pid"] for s in steps}) == 2  # two workers, neither is this process
    assert os.getpid() not in {s.info["pid"] for s in steps}
    done = faulty_pool.step(3, "done").result(10)
    assert isinstance(done, StepResult) and done.reward == 1.0 and done.terminated


def test_env_exception_aborts_episode_but_keeps_worker(faulty_pool):
    faulty_pool.reset(0, 0).result(60)
    pid = faulty_pool.worker_pids()[0]
    result = faulty_pool.step(0, "raise").result(10)
    assert result.truncated and result.info["aborted"] and "raised on purpose" in result.info["error"]
    assert faulty_pool.worker_pids()[0] == pid and faulty_pool.restarts == 0


def test_crashed_worker_restarts_and_reports_every_affected_episode(faulty_pool):
    wait_all([faulty_pool.reset(i, i) for i in range(4)], 60)  # episodes 0, 2 on worker 0; 1, 3 on worker 1
    old_pids = faulty_pool.worker_pids()
    crashed = faulty_pool.step(0, "crash").result(30)
    assert crashed.info["aborted"] and "crashed" in crashed.info["error"]
    sibling = faulty_pool.step(2, "x").result(10)  # its env state died with the worker
    assert sibling.info["aborted"] and "lost its worker" in sibling.info["error"]
    assert faulty_pool.step(1, "x").result(10).observation == "1: x"  # other worker unaffected
    # The scheduler re-samples from the same seed: the episode works again on the restarted worker.
    assert faulty_pool.reset(0, 0).result(60).observation == "seed 0"
    assert faulty_pool.step(0, "y").result(10).observation == "1: y"
    assert faulty_pool.restarts == 1 and faulty_pool.worker_pids()[0] != old_pids[0]
    assert not _wait_gone([old_pids[0]])


def test_hung_step_times_out_without_wedging(faulty_pool):
    wait_all([faulty_pool.reset(i, i) for i in range(2)], 60)
    start = time.monotonic()
    hung = faulty_pool.step(0, "hang")
    other = faulty_pool.step(1, "fine")
    assert other.result(10).observation == "1: fine"  # the other worker keeps serving meanwhile
    result = hung.result(10)
    assert result.info["aborted"] and result.info["timeout"] and result.truncated
    assert 0.9 < time.monotonic() - start < 5
    assert faulty_pool.reset(0, 5).result(60).observation == "seed 5"
    assert faulty_pool.restarts == 1


def test_step_before_reset_is_aborted_not_raised(faulty_pool):
    assert faulty_pool.step(99, "x").result(1).info["aborted"]


def test_close_leaves_no_processes(pool_kind):
    pool = _worker_pool(pool_kind, "toy/faulty", workers=3, step_timeout_s=5.0)
    wait_all([pool.reset(i, i) for i in range(3)], 60)
    grandchildren = [pool.step(i, "spawn").result(10).info["child_pid"] for i in range(3)]
    workers = pool.worker_pids()
    assert len(workers) == 3 and all(_alive(p) for p in workers + grandchildren)
    pool.close()
    assert _wait_gone(workers + grandchildren, timeout_s=15) == []
    with pytest.raises(RuntimeError):
        pool.reset(0, 0)


def test_timeout_kills_the_workers_children(pool_kind):
    with _worker_pool(pool_kind, "toy/faulty", workers=1, step_timeout_s=1.0) as pool:
        pool.reset(0, 0).result(60)
        child = pool.step(0, "spawn").result(10).info["child_pid"]
        assert pool.step(0, "hang").result(10).info["timeout"]
        assert _wait_gone([child], timeout_s=15) == []


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


# -- released episodes are closed in their worker: nothing piles up ---------------------------------------
class ScratchEnv:
    """Holds what a sandboxed env holds: a directory under the worker's scratch dir and an open file."""

    tools: list = []
    system_prompt = ""

    def __init__(self):
        self.path, self.file = None, None

    def reset(self, seed):
        self.close()
        self.path = tempfile.mkdtemp(prefix=f"episode{seed}-", dir=os.environ.get("ALEJAX_SCRATCH_DIR"))
        self.file = open(os.path.join(self.path, "log"), "w")
        return f"seed {seed}", {}

    def step(self, action):
        self.file.write(action)
        return "ok", 1.0, True, False, {}

    def close(self):
        if self.file is not None:
            self.file.close()
            shutil.rmtree(self.path)
            self.path, self.file = None, None


def _run_episodes(pool, first: int, n: int, batch: int, action: str = "go"):
    for start in range(first, first + n, batch):
        ids = range(start, min(start + batch, first + n))
        resets = wait_all([pool.reset(i, i) for i in ids], 60)
        assert not any(r.info.get("aborted") for r in resets), [r.info for r in resets]
        steps = wait_all([pool.step(i, action) for i in ids], 60)
        assert not any(r.info.get("aborted") for r in steps), [r.info for r in steps]
        for i in ids:
            pool.release(i)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_thousand_episodes_leave_nothing_behind_in_the_workers(pool_kind):
    """Before the fix, `release` forgot the episode before its request reached the dispatcher, which then
    dropped it: each worker kept every env (and its directory and file) until the pool closed."""
    with _worker_pool(pool_kind, ScratchEnv, step_timeout_s=30) as pool:
        _run_episodes(pool, 0, 50, batch=25)  # warm: workers started, imports done
        before, fds_before = pool.worker_stats(), _open_fds()
        assert [w["envs"] for w in before] == [0, 0] and all(w["scratch_entries"] == 0 for w in before)
        # While episodes are live the workers do hold them (so the counts below measure something).
        wait_all([pool.reset(i, i) for i in range(10_000, 10_010)], 60)
        live = pool.worker_stats()
        assert sum(w["envs"] for w in live) == 10 and sum(w["scratch_entries"] for w in live) == 10
        assert all(w["open_fds"] == b["open_fds"] + 5 for w, b in zip(live, before))
        for i in range(10_000, 10_010):
            pool.release(i)
        _run_episodes(pool, 50, 1000, batch=50)
        after = pool.worker_stats()
        assert pool.stats() == {"restarts": 0.0, "live_episodes": 0.0}
        for w, b in zip(after, before):
            assert w["envs"] == 0 and w["scratch_entries"] == 0 and w["close_errors"] == 0, w
            assert w["open_fds"] == b["open_fds"], (w, b)
            assert w["rss_kib"] < b["rss_kib"] + 16 * 1024, (w, b)  # no growth per episode (1,000 of them)
        if pool_kind == "process":  # nor in this process (a Ray driver's own connections come and go)
            assert _open_fds() == fds_before


def _footprint(pool) -> list[dict[str, int]]:
    """Per worker, what a leak grows: from outside (/proc/PID: resident KiB, open fds, child processes: the
    sandbox holders) and from inside (live envs, entries in its scratch dir: the sandbox directories)."""
    out = []
    for pid, inside in zip(pool.worker_pids(), pool.worker_stats()):
        with open(f"/proc/{pid}/status") as f:
            vm_rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        out.append(dict(vm_rss_kib=vm_rss_kib, fds=fds, children=len(_children(pid)), **inside))
    return out


def _children(pid: int) -> list[int]:
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children += [int(c) for c in f.read().split()]
        except FileNotFoundError:  # a thread that just ended
            pass
    return children


def test_a_thousand_terminal_episodes_leave_nothing_behind():
    """1,000 real terminal episodes (reset: a sandbox and its shell; one command; release) through ONE
    process pool: after the first 100 and after all 1,000, each worker holds no env, no sandbox directory
    and no child process, and its open fds and memory are the same (memory: within a few MiB)."""
    command = format_tool_call("bash", {"command": "echo hi > note.txt && cat note.txt"})
    with ProcessEnvPool("terminal/hello_file", {}, num_workers=2, step_timeout_s=60) as pool:
        _run_episodes(pool, 0, 100, batch=8, action=command)
        first = _footprint(pool)
        assert all(w["envs"] == 0 and w["scratch_entries"] == 0 and w["children"] == 0 for w in first), first
        _run_episodes(pool, 100, 900, batch=8, action=command)
        last = _footprint(pool)
        assert pool.stats() == {"restarts": 0.0, "live_episodes": 0.0}
    for w, b in zip(last, first):
        assert w["envs"] == 0 and w["scratch_entries"] == 0 and w["children"] == 0, (w, b)
        assert w["close_errors"] == 0 and w["fds"] == b["fds"] and w["open_fds"] == b["open_fds"], (w, b)
        assert w["vm_rss_kib"] < b["vm_rss_kib"] + 8 * 1024, (
            w,
            b,
        )  # 900 more episodes: no growth per episode


# -- warm sandboxes: made ahead in the background, taken by reset ------------------------------------------
def _wait_for(condition, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_reset_takes_a_prewarmed_sandbox_and_close_ends_the_unused_ones(tmp_path):
    from alejax.envs.terminal import TerminalEnv, close_warm_sandboxes

    children_before = set(_children(os.getpid()))
    env = TerminalEnv(task="hello_file", base_dir=str(tmp_path), warm_sandboxes=2)
    try:
        assert env.reset(0)[1]["warm_sandbox"] is False  # nothing made ahead yet: this starts the set
        # The background thread makes two more while the episode runs (each a directory in base_dir).
        assert _wait_for(lambda: len(os.listdir(tmp_path)) == 3), os.listdir(tmp_path)
        ready = {os.path.join(tmp_path, d) for d in os.listdir(tmp_path)} - {env.sandbox.root}
        observation, info = env.reset(1)  # closes episode 0's sandbox, takes a ready one
        assert info["warm_sandbox"] is True and env.sandbox.root in ready
        assert env.step(format_tool_call("bash", {"command": "echo 'Hello, world!' > hello.txt"}))[3] is False
        assert env.step(format_tool_call("submit"))[1] == 1.0  # a warm sandbox plays like a fresh one
        close_warm_sandboxes()  # the unused ready sandboxes end: directories and holder processes
        assert os.listdir(tmp_path) == [os.path.basename(env.sandbox.root)]
    finally:
        env.close()
        close_warm_sandboxes()
    assert os.listdir(tmp_path) == []
    assert _wait_gone(set(_children(os.getpid())) - children_before) == []


def test_worker_pools_reset_from_prewarmed_sandboxes_and_leave_none_at_close(pool_kind):
    """The ready sandboxes live in the worker (process or actor), once for every pool kind."""
    with _worker_pool(pool_kind, "terminal/hello_file", {"warm_sandboxes": 2}, workers=1) as pool:
        assert pool.reset(0, 0).result(60).info["warm_sandbox"] is False
        pool.release(0)
        assert _wait_for(lambda: pool.worker_stats()[0]["scratch_entries"] == 2), pool.worker_stats()
        assert pool.reset(1, 1).result(60).info["warm_sandbox"] is True
        assert _wait_for(lambda: pool.worker_stats()[0]["scratch_entries"] == 3)  # refilled: 1 live + 2
        worker = pool.worker_pids()[0]
        holders = _children(worker)
        assert len(holders) >= 3  # each sandbox's holder (+ the live episode's shell)
    assert _wait_gone([worker, *holders], timeout_s=15) == []


# -- the thread pool: hung calls, releases under a running call, cleanup that fails ------------------------
class SlowCloseEnv:
    """Records when it is closed; `step("slow")` takes a while; `close` raises when asked to."""

    tools: list = []
    system_prompt = ""
    log: list = []

    def __init__(self, fail_close=False):
        self.fail_close = fail_close

    def reset(self, seed):
        return "ready", {}

    def step(self, action):
        if action == "slow":
            time.sleep(0.3)
        SlowCloseEnv.log.append("step done")
        return "ok", 0.0, False, False, {}

    def close(self):
        SlowCloseEnv.log.append("closed")
        if self.fail_close:
            raise RecursionError("cleanup blew up (a deeply nested tree)")


def test_thread_pool_closes_a_released_env_only_after_its_running_call():
    SlowCloseEnv.log = []
    pool = ThreadEnvPool(SlowCloseEnv, max_concurrency=2)
    try:
        pool.reset(0, 0).result(5)
        running = pool.step(0, "slow")
        time.sleep(0.05)
        pool.release(0)  # the scheduler gave up on the episode while its step runs
        assert SlowCloseEnv.log == []  # not closed under the running call
        assert running.result(5).observation == "ok"
        assert SlowCloseEnv.log == ["step done", "closed"]
        assert "never reset" in pool.step(0, "x").result(5).info["error"]  # released: no new env
        assert pool.stats()["live_episodes"] == 0
    finally:
        pool.close()


def test_thread_pool_release_never_raises_when_cleanup_fails():
    pool = ThreadEnvPool(lambda: SlowCloseEnv(fail_close=True), max_concurrency=1)
    try:
        pool.reset(0, 0).result(5)
        pool.release(0)  # the env's close raised: counted, not propagated into the scheduler
        assert pool.stats()["close_errors"] == 1
    finally:
        pool.close()


def test_thread_pool_counts_abandoned_threads_and_stops_at_the_cap():
    """A thread stuck in a hung env call cannot be killed: the pool abandons it (a fresh thread serves on),
    counts it, and once `max_hung_threads` are stuck it answers every call aborted, saying why."""
    unblock = threading.Event()

    class Hangs(SlowCloseEnv):
        def step(self, action):
            unblock.wait(30)
            return super().step(action)

    pool = ThreadEnvPool(Hangs, max_concurrency=2, step_timeout_s=0.2, max_hung_threads=2)
    try:
        wait_all([pool.reset(i, i) for i in range(3)], 5)
        hung = wait_all([pool.step(i, "x") for i in range(2)], 5)
        assert all(r.info["timeout"] for r in hung)
        assert pool.stats()["abandoned_threads"] == 2 and pool.stats()["hung_threads"] == 2
        refused = pool.step(2, "x").result(1)
        assert refused.info["aborted"] and "2 env threads are stuck" in refused.info["error"]
        assert "process env pool" in refused.info["error"]
        unblock.set()  # the hung calls return: their threads end, the pool serves again
        deadline = time.monotonic() + 5
        while pool.stats()["hung_threads"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pool.stats()["hung_threads"] == 0 and pool.stats()["abandoned_threads"] == 2
        assert pool.step(2, "x").result(5).observation == "ok"
    finally:
        unblock.set()
        pool.close()


# -- a job's env_pool section ---------------------------------------------------------------------------
def test_env_pool_section_of_the_rl_config_chooses_the_pool():
    from alejax.config import load_config_file

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    c = load_config_file(os.path.join(root, "configs", "rl.py"))
    assert c.env_pool.kind == "thread" and c.env_pool.step_timeout_s == 60.0  # a hang never blocks a job
    pool = env_pool_from_config(c.env_pool, "toy/echo", {})
    try:
        assert isinstance(pool, ThreadEnvPool) and pool.step_timeout_s == 60.0
    finally:
        pool.close()
    c.env_pool.kind, c.env_pool.workers, c.env_pool.max_batch = "process", 1, 4
    with env_pool_from_config(c.env_pool, "toy/echo", {"horizon": 1}) as pool:
        assert isinstance(pool, ProcessEnvPool) and pool.max_batch == 4
        assert pool.reset(0, 3).result(30).observation == "seed 3"
        assert pool.step(0, "a").result(30).truncated  # env kwargs reached the worker: horizon 1
        assert len(pool.worker_stats()) == 1  # workers=1
    with pytest.raises(ValueError, match=r"thread env pool: unknown option\(s\) \['max_batch'\]"):
        env_pool_from_config(EnvPoolConfig(kind="thread", max_batch=4), "toy/echo", {})
    with pytest.raises(ValueError, match="not one of thread, process, ray"):
        env_pool_from_config({"kind": "threads"}, "toy/echo", {})
    with pytest.raises(ValueError, match=r"unknown keys \['size'\] for EnvPoolConfig"):
        env_pool_from_config({"kind": "thread", "size": 2}, "toy/echo", {})
    assert pool_stats(object()) == {}


# -- hung and crashing envs inside a real RL step ----------------------------------------------------------
_UNBLOCK = threading.Event()  # lets in-process hangs end when a test is over


class FlakyEnv:
    """One turn, reward 1 for an answer starting with a-j. The first episode of a seed in `hang` / `crash` /
    `raise` to step misbehaves once that way (a marker file per seed, so it holds across worker restarts);
    the re-sampled episode plays normally."""

    tools: list = []
    system_prompt = "Answer."

    def __init__(self, marker_dir=None, hang=(), crash=(), fail=()):
        self.marker_dir, self.seed = marker_dir, None
        self.modes = {
            **dict.fromkeys(hang, "hang"),
            **dict.fromkeys(crash, "crash"),
            **dict.fromkeys(fail, "raise"),
        }

    def reset(self, seed):
        self.seed = seed
        return f"question {seed}", {}

    def step(self, action):
        mode = self.modes.get(self.seed)
        if mode and self._first_time():
            if mode == "hang":
                _UNBLOCK.wait(120)  # in a worker process: killed at the step timeout
            elif mode == "crash":
                os._exit(3)  # the process dies without cleanup, like a segfault
            else:
                raise RuntimeError("flaky env raised on purpose")
        reward = float(action[:1].lower() in "abcdefghij")
        return "", reward, True, False, {"success": bool(reward)}

    def _first_time(self) -> bool:
        try:
            os.close(os.open(os.path.join(self.marker_dir, str(self.seed)), os.O_CREAT | os.O_EXCL))
            return True
        except FileExistsError:
            return False


register("test/flaky", FlakyEnv)


@pytest.fixture(scope="module")
def rl_tokenizer():
    from alejax.data.synthetic import generate_corpus
    from alejax.data.tokenizer import train_bpe

    return train_bpe(generate_corpus(200, seed=0), vocab_size=300)


def _tiny_rl_config(tokenizer, kind: str, step_timeout_s: float):
    """configs/rl.py shrunk to one quick step: 2 groups x 4 one-turn episodes, a 32-wide model."""
    from ml_collections import ConfigDict

    from alejax.config import load_config_file

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    c = load_config_file(os.path.join(root, "configs", "rl.py"))
    c.env.name, c.env.kwargs = "test/flaky", ConfigDict()
    c.model = ConfigDict(
        dict(
            vocab_size=tokenizer.vocab_size,
            d_model=32,
            n_layers=1,
            n_heads=2,
            n_kv_heads=1,
            head_dim=8,
            mlp_dim=64,
        )
    )
    c.rl.groups_per_step, c.rl.group_size, c.rl.minibatch_size = 2, 4, 8
    c.rl.filter_zero_variance_groups = False
    c.rollout.max_turns, c.rollout.max_new_tokens_per_turn = 1, 4
    c.max_length, c.steps = 64, 1
    c.env_pool.kind, c.env_pool.workers, c.env_pool.step_timeout_s = kind, 2, step_timeout_s
    return c


@pytest.mark.parametrize(
    "kind, misbehaviour",
    [
        ("thread", {"hang": [11], "fail": [12]}),  # a thread pool survives hangs (abandoned) and raises
        ("process", {"crash": [11], "hang": [12]}),  # a process pool also survives a dying worker
        ("ray", {"crash": [11], "hang": [12]}),  # ... and so does a Ray pool, a dying actor
    ],
)
def test_hung_and_crashed_env_steps_in_an_rl_step_are_resampled(
    rl_tokenizer, kind, misbehaviour, tmp_path, request
):
    """A real RL step (rollout, train, sync) with envs that hang and crash: no exception leaves the step,
    every bad episode is re-sampled from its seed, and the metrics count what happened."""
    from alejax.rl.build import build_pipeline

    if kind == "ray":
        request.getfixturevalue("ray_session")

    c = _tiny_rl_config(rl_tokenizer, kind, step_timeout_s=0.5 if kind == "thread" else 1.5)
    # The job's own config path picks the pool (a factory here: the workers import this module for it).
    pool = env_pool_from_config(c.env_pool, FlakyEnv, {"marker_dir": str(tmp_path), **misbehaviour})
    _UNBLOCK.clear()
    pipeline = build_pipeline(c, rl_tokenizer, env_pool=pool)
    try:
        metrics = pipeline.step([11, 12])
    finally:
        _UNBLOCK.set()
        pipeline.close()
    assert sorted(os.listdir(tmp_path)) == ["11", "12"]  # both seeds did misbehave, once each
    assert metrics["aborted_episodes"] == 0  # ... and every episode was re-sampled to completion
    assert metrics["aborted_resamples"] == metrics["env_aborts"] >= 2
    assert metrics["env_timeouts"] >= 1 and metrics["policy_version"] == 1  # the step trained
    assert "skipped_update" not in metrics and metrics["loss"] == metrics["loss"]
    if kind == "thread":
        assert metrics["env_timeouts"] == 1 and metrics["env_aborts"] == 2  # the hang, and the raise
        assert metrics["env_pool_abandoned_threads"] == 1
    else:
        # The crash takes its worker's other episodes with it (they re-sample too); the hang kills its worker.
        assert metrics["env_pool_restarts"] == 2


class _FailsFutures:
    """A pool wrapper whose first step of each seed in `seeds` fails its future (a buggy custom pool)."""

    def __init__(self, pool, seeds):
        self.pool, self.seeds, self.seed_of = pool, set(seeds), {}

    def reset(self, episode_id, seed):
        self.seed_of[episode_id] = seed
        return self.pool.reset(episode_id, seed)

    def step(self, episode_id, action):
        seed = self.seed_of[episode_id]
        if seed in self.seeds:
            self.seeds.discard(seed)
            future = concurrent.futures.Future()
            future.set_exception(RuntimeError("a pool bug"))
            return future
        return self.pool.step(episode_id, action)

    def release(self, episode_id):
        self.pool.release(episode_id)

    def close(self):
        self.pool.close()


def test_a_pool_that_never_answers_or_fails_a_future_costs_a_resample_not_the_step(rl_tokenizer, tmp_path):
    """The scheduler's own backstop: a pool without a timeout leaves a hung call unanswered, and a buggy
    pool fails a future; both become aborted, re-sampled episodes (before: TimeoutError / the exception)."""
    from alejax.rl.build import build_pipeline

    c = _tiny_rl_config(rl_tokenizer, "thread", step_timeout_s=None)
    c.rollout.wait_timeout_s = 1.0
    pool = env_pool_from_config(c.env_pool, FlakyEnv, {"marker_dir": str(tmp_path), "hang": [11]})
    _UNBLOCK.clear()
    pipeline = build_pipeline(c, rl_tokenizer, env_pool=_FailsFutures(pool, [12]))
    try:
        metrics = pipeline.step([11, 12])
    finally:
        _UNBLOCK.set()  # the hung call returns, so close (which waits for running calls) does not block
        pipeline.close()
    assert metrics["env_timeouts"] == 1 and metrics["env_aborts"] == 2 and metrics["aborted_resamples"] == 2
    assert metrics["aborted_episodes"] == 0 and metrics["policy_version"] == 1
    assert "env_pool_abandoned_threads" not in metrics  # the wrapper has no stats(): nothing logged
