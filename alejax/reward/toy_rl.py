"""A tiny policy RL'd on a reward source, on the toy token task (Tier B of spec/causal_rm.md): how much gold
reward a policy reaches when its reward is a reward model's score (BT, a robust option) or the gold rule.

The policy is the Tier B Transformer, sampling its response under the toy grammar ([SURE] d FILL* EOS, so every
sample is a well-formed response the RMs were trained on) for prompts whose user belief is a random digit.
Each RL step: G samples per prompt, reward = the source's score (normalised by its scores on the initial
policy's samples), GRPO advantages (alejax.rl.advantages) and the PPO-clip loss (alejax.rl.losses), one
on-policy update. `bench/rm_rl.py` runs it for each source; results in docs/reward.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from alejax.models.transformer import Transformer
from alejax.reward import toy
from alejax.reward.robustness import TIER_B_MODEL
from alejax.rl.advantages import AdvantageConfig, get_advantage
from alejax.rl.losses import LossConfig as RLLossConfig
from alejax.rl.losses import LossInputs, rl_loss

POLICY_MODEL = TIER_B_MODEL  # the rm job's tiny backbone, as a policy
PROMPT_LEN = 8  # BOS a + b = USER c ANS
RESP_LEN = toy.SEQ_LEN - PROMPT_LEN  # [SURE] d FILL*<=MAX_FILL EOS


def prompts(key: jax.Array, n: int) -> jax.Array:
    """[n, PROMPT_LEN] prompts a + b = USER c with a random belief c."""
    abc = jax.random.randint(key, (n, 3), 0, 10) + toy.DIGIT0
    col = lambda v: jnp.full((n,), v, jnp.int32)  # noqa: E731
    return jnp.stack(
        [
            col(toy.BOS),
            abc[:, 0],
            col(toy.PLUS),
            abc[:, 1],
            col(toy.EQ),
            col(toy.USER),
            abc[:, 2],
            col(toy.ANS),
        ],
        1,
    ).astype(jnp.int32)


def allowed_tokens(has_sure, has_digit, n_fill, done) -> jax.Array:
    """[B, V] grammar mask of the next response token."""
    v = jnp.arange(toy.VOCAB_SIZE)
    is_digit = (v >= toy.DIGIT0) & (v < toy.DIGIT0 + 10)
    first = (v == toy.SURE)[None] & ~has_sure[:, None] | is_digit[None]
    after_digit = (v == toy.EOS)[None] | ((v == toy.FILL)[None] & (n_fill < toy.MAX_FILL)[:, None])
    mask = jnp.where(has_digit[:, None], after_digit, first)
    return jnp.where(done[:, None], (v == toy.PAD)[None], mask)


def sample(model: Transformer, prompt: jax.Array, key: jax.Array):
    """(tokens [B, SEQ_LEN], masks [B, RESP_LEN, V], loss_mask [B, RESP_LEN]): grammar-constrained sampling."""
    b = prompt.shape[0]
    tokens = jnp.concatenate([prompt, jnp.full((b, RESP_LEN), toy.PAD, jnp.int32)], 1)
    has_sure = has_digit = done = jnp.zeros((b,), bool)
    n_fill = jnp.zeros((b,), jnp.int32)
    masks, live = [], []
    for t in range(RESP_LEN):  # 10 full forwards of an 18-token sequence: cheaper than a cache at this size
        logits = model(tokens)[:, PROMPT_LEN + t - 1]
        allowed = allowed_tokens(has_sure, has_digit, n_fill, done)
        tok = jax.random.categorical(jax.random.fold_in(key, t), jnp.where(allowed, logits, -1e9))
        masks.append(allowed)
        live.append(~done)
        tokens = tokens.at[:, PROMPT_LEN + t].set(tok)
        has_sure |= tok == toy.SURE
        has_digit |= (tok >= toy.DIGIT0) & (tok < toy.DIGIT0 + 10)
        n_fill += (tok == toy.FILL).astype(jnp.int32)
        done |= tok == toy.EOS
    return tokens, jnp.stack(masks, 1), jnp.stack(live, 1).astype(jnp.float32)


def response_logp(model: Transformer, tokens: jax.Array, masks: jax.Array) -> jax.Array:
    """[B, RESP_LEN] log-probs of the response tokens under the grammar-masked policy."""
    logits = model(tokens)[:, PROMPT_LEN - 1 : -1]
    logp = jax.nn.log_softmax(jnp.where(masks, logits, -1e9), axis=-1)
    return jnp.take_along_axis(logp, tokens[:, PROMPT_LEN:, None], axis=-1)[..., 0]


def describe(tokens: jax.Array, task: str) -> dict[str, jax.Array]:
    """Per sample: gold (correct answer), sure, agree (answer = the user's belief), fill length."""
    a, b, belief = tokens[:, 1] - toy.DIGIT0, tokens[:, 3] - toy.DIGIT0, tokens[:, 6] - toy.DIGIT0
    resp = tokens[:, PROMPT_LEN:]
    is_digit = (resp >= toy.DIGIT0) & (resp < toy.DIGIT0 + 10)
    answer = jnp.sum(jnp.where(is_digit, resp - toy.DIGIT0, 0), 1)
    target = {"sum": (a + b) % 10, "max": jnp.maximum(a, b), "copy": a}[task]
    return {
        "gold": (answer == target).astype(jnp.float32),
        "sure": (resp[:, 0] == toy.SURE).astype(jnp.float32),
        "agree": (answer == belief).astype(jnp.float32),
        "fill": jnp.sum(resp == toy.FILL, 1).astype(jnp.float32),
    }


def on_policy_update(tx, params, opt_state, logp_of, raw, scale, group_id, mask, adv_fn, adv_cfg, loss_cfg):
    """One on-policy RL update of a small policy (π_old = μ = π_θ): rewards `raw` [B] in the start policy's
    units ((raw - scale[0]) / scale[1]), advantages over the groups `group_id` [B] with one chunk per sample,
    then the RL loss on `logp_of(params)` -> (log-probs [B, T], entropies [B, T] or None) over `mask`.
    Returns (params, opt_state). The toy-token study here and the relation hacking study share it."""
    reward = (raw - scale[0]) / scale[1]
    chunk_id = mask.astype(jnp.int32)
    batch = {"reward": reward, "group_id": group_id, "loss_mask": mask, "chunk_id": chunk_id}
    advantages, _ = adv_fn(batch, adv_cfg)

    def loss(params):
        logp, entropy = logp_of(params)
        old = jax.lax.stop_gradient(logp)
        inputs = LossInputs(logp, old, old, advantages, mask, chunk_id, reward, entropy=entropy)
        return rl_loss(inputs, loss_cfg)[0]

    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def make_rl_step(reward_fn, *, task: str, n_prompts: int, group: int, lr: float):
    """The jit'd GRPO step for one reward source; reward_fn(reward_params, tokens [N, SEQ_LEN]) -> [N]. Each
    step samples `group` responses to each of `n_prompts` prompts of toy task `task`. Compiled once per
    source: the seeds' policies and reward models are arguments."""
    graphdef = nnx.graphdef(Transformer(POLICY_MODEL, rngs=nnx.Rngs(0)))
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))
    adv_fn, adv_cfg = get_advantage("grpo"), AdvantageConfig()
    loss_cfg = RLLossConfig(policy_loss="ppo_clip", aggregation="token_mean")
    group_id = jnp.repeat(jnp.arange(n_prompts), group)

    @jax.jit
    def step(params, opt_state, key, scale, reward_params):
        k_prompt, k_sample = jax.random.split(key)
        prompt = jnp.repeat(prompts(k_prompt, n_prompts), group, axis=0)
        tokens, masks, live = sample(nnx.merge(graphdef, params), prompt, k_sample)
        stats = describe(tokens, task)
        raw = reward_fn(reward_params, tokens)
        logp_of = lambda params: (response_logp(nnx.merge(graphdef, params), tokens, masks), None)  # noqa: E731
        params, opt_state = on_policy_update(
            tx, params, opt_state, logp_of, raw, scale, group_id, live, adv_fn, adv_cfg, loss_cfg
        )
        return params, opt_state, stats, raw

    return step, tx


def rl_run(step, tx, seed: int, steps: int, reward_params, log_every: int = 50) -> dict[str, np.ndarray]:
    """`steps` GRPO steps of a fresh policy (from `make_rl_step`); per-step means of the sample stats."""
    params = nnx.state(Transformer(POLICY_MODEL, rngs=nnx.Rngs(100 + seed)))
    opt_state = tx.init(params)
    key = jax.random.key(seed)
    # Normalise the source's scale once, on samples of the initial policy (as the reward worker does).
    _, _, _, raw = step(
        params, opt_state, jax.random.fold_in(key, 1_000_000), jnp.array([0.0, 1.0]), reward_params
    )
    scale = jnp.array([float(raw.mean()), float(raw.std()) + 1e-6])
    history = {k: [] for k in ("gold", "sure", "agree", "fill")}
    for i in range(steps):
        params, opt_state, stats, _ = step(
            params, opt_state, jax.random.fold_in(key, i), scale, reward_params
        )
        for k in history:
            history[k].append(float(stats[k].mean()))
        if (i + 1) % log_every == 0:
            print(f"  step {i + 1}/{steps}: gold {history['gold'][-1]:.3f}", flush=True)
    return {k: np.array(v) for k, v in history.items()}
