"""DPO: each variant's loss and gradient against numpy references, preference JSONL errors that name the line and
field, pairs from trajectories, a few DPO steps on a tiny model, and the dpo job's run + resume.

The references are plain loops over pairs and tokens written from the papers' formulas, not from the jnp code;
the gradients are the analytic ones (dℓ/dh times dh/dlog π_θ(t)), so a sign or normalisation slip fails.
"""

from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alejax.data.records import RecordError, TrajectoryRecord
from alejax.parallel.mesh import make_mesh
from alejax.rl.dpo import (
    PREFERENCE_LOSSES,
    DPOConfig,
    PreferenceInputs,
    get_preference_loss,
    make_dpo_loss,
    pairs_from_records,
    pairs_tokenizer,
    preference_arrays,
    preference_from_json,
    preference_loss,
    read_preference_jsonl,
    with_reference_logprobs,
)
from alejax.train.state import init_train_state, optimizer_from
from alejax.train.step import make_logprob_fn, make_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFS = os.path.join(ROOT, "tests", "data", "preferences", "arithmetic.jsonl")
P, T = 7, 12
EMPTY_PAIR = 3  # its rejected side has no response tokens: left out of the mean, zero gradient


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def reference(name: str, lc, lr, rc, rr, mc, mr, beta: float, eps: float):
    """(loss, dloss/dlc, dloss/dlr, margins) by loops: the mean over pairs with both sides non-empty."""
    valid = [p for p in range(len(lc)) if mc[p].sum() > 0 and mr[p].sum() > 0]
    loss, g_c, g_r, margins = 0.0, np.zeros_like(lc), np.zeros_like(lr), []
    for p in valid:
        d_c = sum(mc[p, t] * (lc[p, t] - rc[p, t]) for t in range(lc.shape[1]))
        d_r = sum(mr[p, t] * (lr[p, t] - rr[p, t]) for t in range(lr.shape[1]))
        n_c, n_r = mc[p].sum(), mr[p].sum()
        if name == "dpo":  # h = β(Δc − Δr); ℓ = −(1−ε) log σ(h) − ε log σ(−h)
            h = beta * (d_c - d_r)
            value = -(1 - eps) * log_sigmoid(h) - eps * log_sigmoid(-h)
            dh = -(1 - eps) * sigmoid(-h) + eps * sigmoid(h)
            dc, dr, margin = dh * beta * mc[p], -dh * beta * mr[p], h
        elif name == "dpo_norm":  # h = β(Δc/|c| − Δr/|r|)
            h = beta * (d_c / n_c - d_r / n_r)
            value = -(1 - eps) * log_sigmoid(h) - eps * log_sigmoid(-h)
            dh = -(1 - eps) * sigmoid(-h) + eps * sigmoid(h)
            dc, dr, margin = dh * beta * mc[p] / n_c, -dh * beta * mr[p] / n_r, h
        elif name == "dpo_nll":  # DPO + α·(−Σ m_c log π_θ / |c|), α = 1
            h = beta * (d_c - d_r)
            nll = -sum(mc[p, t] * lc[p, t] for t in range(lc.shape[1])) / n_c
            value = -(1 - eps) * log_sigmoid(h) - eps * log_sigmoid(-h) + nll
            dh = -(1 - eps) * sigmoid(-h) + eps * sigmoid(h)
            dc, dr, margin = dh * beta * mc[p] - mc[p] / n_c, -dh * beta * mr[p], h
        elif name == "ipo":  # ℓ = (Δc − Δr − 1/(2β))²
            h = d_c - d_r
            value = (h - 1 / (2 * beta)) ** 2
            dh = 2 * (h - 1 / (2 * beta))
            dc, dr, margin = dh * mc[p], -dh * mr[p], beta * h
        loss += value / len(valid)
        g_c[p] += dc / len(valid)
        g_r[p] += dr / len(valid)
        margins.append(margin)
    return loss, g_c, g_r, np.array(margins)


def random_inputs(rng):
    lc, lr = (-rng.gamma(2.0, 1.0, (P, T)).astype(np.float32) for _ in range(2))
    rc, rr = (x + rng.normal(0, 0.7, (P, T)).astype(np.float32) for x in (lc, lr))
    masks = []
    for _ in range(2):
        m = np.zeros((P, T), np.float32)
        for p in range(P):
            start, end = int(rng.integers(1, 5)), T - int(rng.integers(0, 4))
            m[p, start:end] = rng.choice([1.0, 1.0, 0.5], end - start)  # per-message weights
        masks.append(m)
    masks[1][EMPTY_PAIR] = 0.0
    return lc, lr, rc, rr, *masks


@pytest.mark.parametrize("name", ["dpo", "dpo_norm", "ipo", "dpo_nll"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_loss_and_gradient_match_numpy(name, eps):
    if name == "ipo" and eps:
        pytest.skip("IPO has no label smoothing")
    config = DPOConfig(loss=name, beta=0.3, label_smoothing=eps)

    @jax.jit
    def loss_and_grads(lc, lr, rc, rr, mc, mr):
        def f(lc, lr):
            return preference_loss(PreferenceInputs(lc, lr, rc, rr, mc, mr), config)

        return jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(lc, lr)

    for seed in range(3):
        lc, lr, rc, rr, mc, mr = random_inputs(np.random.default_rng(seed))
        (loss, metrics), (g_c, g_r) = loss_and_grads(lc, lr, rc, rr, mc, mr)
        want, want_c, want_r, margins = reference(name, lc, lr, rc, rr, mc, mr, config.beta, eps)
        np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(g_c), want_c, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.asarray(g_r), want_r, rtol=1e-4, atol=1e-6)
        assert not np.asarray(g_r)[EMPTY_PAIR].any() and not np.asarray(g_c)[EMPTY_PAIR].any()
        np.testing.assert_allclose(float(metrics["reward_margin"]), margins.mean(), rtol=1e-5, atol=1e-6)
        assert float(metrics["accuracy"]) == pytest.approx(np.mean(margins > 0))
        assert float(metrics["loss_weight"]) == P - 1


def test_losses_at_the_reference_and_unknown_names():
    """π_θ = π_ref: DPO's loss is log 2 with zero margin; IPO's is (1/(2β))²."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5)), jnp.float32)
    m = jnp.ones((3, 5))
    inputs = PreferenceInputs(x, x + 1.0, x, x + 1.0, m, m)
    for name, want in (("dpo", math.log(2)), ("dpo_norm", math.log(2)), ("ipo", (1 / 0.2) ** 2)):
        loss, metrics = preference_loss(inputs, DPOConfig(loss=name, beta=0.1))
        assert float(loss) == pytest.approx(want, rel=1e-6) and float(metrics["reward_margin"]) == 0.0
    assert set(PREFERENCE_LOSSES) >= {"dpo", "dpo_norm", "ipo", "dpo_nll"}
    with pytest.raises(KeyError, match="known: dpo, dpo_nll, dpo_norm, ipo"):
        get_preference_loss("simpo")
    with pytest.raises(KeyError, match="unknown preference loss"):
        make_dpo_loss(DPOConfig(loss="nope"))


# -- preference JSONL --------------------------------------------------------------------------------------
GOOD = {"prompt": "What is 2 + 2?", "chosen": "4.", "rejected": "5."}


@pytest.mark.parametrize(
    "line, where",
    [
        ({"prompt": "q", "chosen": "a"}, "field 'rejected' is missing"),
        ({**GOOD, "prompt": 3}, "field 'prompt' must be a string or a list of messages"),
        ({**GOOD, "prompt": [{"role": "robot", "content": "x"}]}, "field 'prompt': messages[0].role"),
        ({**GOOD, "chosen": [{"role": "user", "content": "x"}]}, "field 'chosen' holds no assistant message"),
        ({**GOOD, "rejected": {"text": "x"}}, "field 'rejected' must be a string"),
        ({**GOOD, "rejected": "4."}, "fields 'chosen' and 'rejected' are identical"),
        ({**GOOD, "chosen": [{"role": "assistant"}]}, "field 'chosen': messages[0].content: missing"),
    ],
)
def test_a_malformed_line_names_its_line_and_field(tmp_path, line, where):
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + json.dumps(line) + "\n")
    with pytest.raises(RecordError) as err:
        read_preference_jsonl(str(path))
    assert f"{path} line 3: " in str(err.value) and where in str(err.value)


def test_bad_json_names_the_line(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(RecordError, match="line 2: not valid JSON"):
        read_preference_jsonl(str(path))


def test_arrays_put_the_loss_on_the_response_only():
    pairs = read_preference_jsonl(PREFS)
    assert pairs[0].prompt[0] == {"role": "system", "content": "You are a calculator."}  # a messages prompt
    assert pairs[1].prompt == [{"role": "user", "content": "What is 9 + 17?"}]  # a string prompt
    tokenizer = pairs_tokenizer(pairs, 400)
    arrays, stats = preference_arrays(tokenizer, pairs[:6], max_length=256)
    assert stats == {"pairs": 6, "truncated": 0, "dropped": 0}
    eos = tokenizer.decode([tokenizer.eos_id])
    for i, pair in enumerate(pairs[:6]):
        for name in ("chosen", "rejected"):
            tokens, mask = arrays[f"{name}_tokens"][i], arrays[f"{name}_loss_mask"][i]
            learned = tokenizer.decode([t for t, m in zip(tokens, mask) if m])
            assert learned == getattr(pair, name)[0]["content"] + eos
        # Both sides start with the same prompt tokens.
        n = int(np.argmax(arrays["chosen_loss_mask"][i] > 0))
        assert (arrays["chosen_tokens"][i, :n] == arrays["rejected_tokens"][i, :n]).all()
    # Cut just after pair 5's first response token: it stays; pairs 0 and 4 (a system prompt) lose theirs.
    short, cut = preference_arrays(tokenizer, pairs[:6], max_length=n + 1)
    assert cut["dropped"] >= 2 and cut["truncated"] >= 2 and len(short["chosen_tokens"]) == cut["pairs"] >= 1
    assert short["chosen_tokens"].shape[1] == n + 1 and short["chosen_loss_mask"][-1, n] > 0


# -- pairs from trajectories -------------------------------------------------------------------------------
def _record(env, seed, actions, success, reward=None, id=""):
    messages = [{"role": "system", "content": "shop"}, {"role": "user", "content": f"task {seed}"}]
    for i, a in enumerate(actions):
        messages += [{"role": "assistant", "content": a}, {"role": "user", "content": f"obs {a} {i}"}]
    return TrajectoryRecord(messages=messages, env=env, seed=seed, success=success, reward=reward, id=id)


def test_pairs_from_trajectories_pair_success_with_failure_of_the_same_task():
    records = [
        _record("shop", 1, ["search[a]", "click[x]"], True, id="w1"),
        _record("shop", 1, ["search[a]", "click[y]"], False, id="l1"),
        _record("shop", 1, ["search[b]"], False, id="l2"),
        _record("shop", 2, ["search[a]"], True),  # only successes: no pair
        _record("shop", 2, ["search[c]"], True),
        _record("arith", 1, ["1"], None, reward=0.0, id="l3"),  # graded by reward: a failure
        _record("arith", 1, ["2"], None, reward=1.0, id="w3"),
        _record("arith", 3, ["7"], None),  # ungraded: never paired
        _record("arith", 3, ["8"], True),
        TrajectoryRecord(messages=[{"role": "user", "content": "x"}], success=True),  # no seed
    ]
    pairs = pairs_from_records(records, max_pairs_per_task=2, seed=0)
    by_task = {(p.info["env"], p.info["seed"]): p for p in pairs}
    assert sorted(by_task) == [("arith", 1), ("shop", 1)]
    assert len(pairs) == 2  # shop seed 1 has one success: it is used once
    shop = by_task[("shop", 1)]
    assert shop.id.startswith("shop:1:w1>")
    # The prompt is everything both share; each side keeps at least one assistant turn.
    common = 4 if shop.id.endswith("l1") else 2
    assert shop.prompt == records[0].messages[:common]
    assert shop.chosen == records[0].messages[common:]
    assert by_task[("arith", 1)].chosen[0]["content"] == "2"
    assert by_task[("arith", 1)].rejected[0]["content"] == "1"
    # Capped per task, and a seeded draw: the same seed gives the same pairs.
    assert len(pairs_from_records(records[:3] * 2, max_pairs_per_task=5)) == 2
    assert [p.id for p in pairs_from_records(records, seed=3)] == [
        p.id for p in pairs_from_records(records, seed=3)
    ]


# -- training ----------------------------------------------------------------------------------------------
def tiny_config(workdir, preset="tiny"):
    """configs/dpo.py with a one-layer model: the margin test and the job test build the same model and
    tokenizer, so the run's compilation cache serves the second (init, reference log-probs)."""
    from alejax.config import load_config_file

    c = load_config_file(os.path.join(ROOT, "configs", f"dpo.py:{preset}"))
    c.workdir = str(workdir)
    c.model.d_model, c.model.n_layers, c.model.mlp_dim, c.model.head_dim = 32, 1, 64, 8
    c.data.max_length = 64
    # A constant schedule compiles the same whatever the step count: the two tests share the train step too.
    c.optim.learning_rate, c.optim.warmup_steps, c.optim.schedule = 3e-3, 1, "constant"
    return c


def test_dpo_steps_raise_the_margin_on_the_training_pairs(tmp_path):
    from alejax.config import from_section, model_config_from

    c = tiny_config(tmp_path)
    all_pairs = read_preference_jsonl(PREFS)
    tokenizer = pairs_tokenizer(all_pairs, c.model.vocab_size)  # what the job trains on these pairs
    arrays, _ = preference_arrays(tokenizer, all_pairs[:8], max_length=c.data.max_length)
    mesh = make_mesh({"fsdp": 1}, devices=jax.devices()[:1])  # one device: a tiny model compiles fastest
    tx = optimizer_from(c.optim, total_steps=12)
    graphdef, state, shardings = init_train_state(model_config_from(c.model, tokenizer), tx, mesh, seed=0)
    arrays = with_reference_logprobs(make_logprob_fn(graphdef), state.params, state.frozen, arrays, mesh, 8)
    config = from_section(DPOConfig, c.dpo)
    assert config == DPOConfig(loss="dpo", beta=0.1)
    step = make_train_step(graphdef, tx, shardings, mesh, make_dpo_loss(config))
    batch = {k: jnp.asarray(v) for k, v in arrays.items()}
    history = []
    for _ in range(12):
        state, metrics = step(state, batch)  # metrics: before this update
        history.append({k: float(v) for k, v in metrics.items()})
    # At the start the policy is the reference: zero margin, loss log 2 (the policy's own log-probs came from
    # the train step's forward, the reference's from make_logprob_fn: the same numbers).
    assert abs(history[0]["reward_margin"]) < 1e-4 and history[0]["loss"] == pytest.approx(
        math.log(2), abs=1e-4
    )
    assert history[-1]["reward_margin"] > 0.5 and history[-1]["accuracy"] == 1.0
    assert history[-1]["loss"] < 0.5 * math.log(2)
    # The policy's own chosen-minus-rejected log-prob margin rose by what the reward margin says (β·Δ).
    rise = history[-1]["logp_margin"] - history[0]["logp_margin"]
    assert rise == pytest.approx(history[-1]["reward_margin"] / config.beta, rel=1e-3)


def test_dpo_job_runs_checkpoints_and_resumes(tmp_path):
    from alejax.main import run_job

    def config(steps):
        c = tiny_config(tmp_path)
        c.steps, c.log_every, c.eval_every, c.checkpoint_every = steps, 2, 2, 2
        return c

    first = run_job(config(4))
    assert os.path.isdir(os.path.join(tmp_path, "checkpoints", "4"))
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [0, 2, 4]
    assert rows[0]["eval_reward_margin"] == 0.0 and {"loss", "reward_margin", "accuracy"} <= set(rows[1])
    assert rows[0]["eval_loss"] == pytest.approx(math.log(2), abs=1e-4) and first["loss"] < math.log(2)
    resumed = run_job(config(6))  # resumes at step 4 and runs two more
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [0, 2, 4, 6] and resumed["loss"] == rows[-1]["loss"]
    assert os.path.exists(os.path.join(resumed["model_dir"], "tokenizer.json"))


def test_preference_from_json_keeps_extra_keys():
    pair = preference_from_json({**GOOD, "id": "x", "source": "human"}, "r")
    assert pair.id == "x" and pair.info == {"source": "human"}
