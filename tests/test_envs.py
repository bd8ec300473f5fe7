"""Env protocol conformance: determinism given the seed, replay of an action prefix, scripted play, speed."""

import time

import pytest

from alejax.envs import Env, make, registered, replay

FAST_ENVS = ["arithmetic/calc", "arithmetic/hard", "keydoor/corridor", "keydoor/long", "toy/echo"]


def _play(env, seed):
    observation, _ = env.reset(seed)
    policy = env.scripted_policy()
    messages = [{"role": "user", "content": observation}]
    actions, results = [], []
    while True:
        action = policy(messages)
        result = env.step(action)
        actions.append(action)
        results.append(result)
        messages += [{"role": "assistant", "content": action}, {"role": "tool", "content": result[0]}]
        if result[2] or result[3]:
            return actions, results


def test_registry_lists_families():
    names = registered()
    for name in FAST_ENVS + ["terminal/all", "terminal/hello_file", "toy/faulty"]:
        assert name in names
    with pytest.raises(KeyError):
        make("keydoor/nope")


@pytest.mark.parametrize("name", FAST_ENVS)
def test_protocol_determinism_and_replay(name):
    env = make(name)
    assert isinstance(env, Env)
    for seed in range(5):
        actions, results = _play(env, seed)
        assert results[-1][1] == 1.0 and results[-1][2], f"scripted policy failed on seed {seed}"
        first, replayed = replay(make(name), seed, actions)
        assert first == env.reset(seed)[0]
        assert [tuple(r) for r in replayed] == [tuple(r) for r in results]
        # A prefix replays to the same intermediate state.
        k = len(actions) // 2
        _, prefix = replay(make(name), seed, actions[:k])
        assert [tuple(r) for r in prefix] == [tuple(r) for r in results[:k]]
    observations = {make(name).reset(seed)[0] for seed in range(20)}
    assert len(observations) > 5 or name == "toy/echo" and len(observations) == 20


def test_keydoor_horizon_and_compact_actions():
    env = make("keydoor/corridor", n_rooms=20)
    lengths = []
    for seed in range(20):
        env.reset(seed)
        lengths.append(len(env.optimal_actions()))
        _, results = replay(env, seed, env.optimal_actions(compact=True))
        assert results[-1].reward == 1.0
    assert max(lengths) > 20  # long horizons really are long
    env.reset(0)
    assert env.step("open")[0].startswith(("no door", "the door is locked"))
    observation, reward, terminated, truncated, info = env.step("fly away")
    assert reward == 0 and not terminated and info["malformed"] and "Error" in observation


def test_keydoor_failure_paths():
    env = make("keydoor/corridor", n_rooms=5, max_steps=3)
    env.reset(1)
    results = [env.step("take") for _ in range(3)]
    assert results[-1][3] and not results[-1][2] and sum(r[1] for r in results) == 0


def test_arithmetic_rewards_only_correct_answer():
    env = make("arithmetic/calc")
    _, info = env.reset(7)
    target = info["target"]
    assert env.step("calc 2 * 3")[0] == "= 6"
    assert env.step("calc 2 * 3 + 1")[0].startswith("Error")  # one operation per call
    observation, reward, terminated, _, _ = env.step(f"answer {target + 1}")
    assert (observation, reward, terminated) == ("wrong", 0.0, True)
    env.reset(7)
    assert (
        env.step(f'<tool_call>{{"name": "answer", "arguments": {{"value": {target}}}}}</tool_call>')[1] == 1.0
    )


@pytest.mark.parametrize("name", ["arithmetic/calc", "keydoor/long"])
def test_fast_envs_are_fast(name):
    env = make(name)
    steps, start = 0, time.perf_counter()
    for seed in range(200):
        env.reset(seed)
        for action in env.optimal_actions(compact=True):
            env.step(action)
            steps += 1
    per_step = (time.perf_counter() - start) / steps
    assert per_step < 200e-6, f"{per_step * 1e6:.0f} us per step"
