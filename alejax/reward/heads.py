"""The reward head stack on a feature vector h [B, H]: Bradley-Terry, VIB, or the factored causal RM.

The same module serves a backbone's last-token hidden state and frozen features (Tier A of the robustness
benchmark), so both paths share one implementation. Parameters carry logical axis names like the backbone's.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from alejax.reward.grl import gradient_reversal

KINDS = ("bt", "vib", "causal")


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    kind: str = "causal"  # bt: scalar head on the encoder | vib: stochastic z_c only | causal: factored
    enc_hidden: int = 1024  # MLP_enc: Linear(H, e)-ReLU-Linear(e, e)-ReLU
    d_c: int = 128  # causal factors (the reward reads only these)
    d_n: int = 512  # non-causal factors (the adversary reads only these)
    dec_hidden: int = 1024  # MLP_dec([z_c; z_n]) -> H
    adversary: str = "linear"  # linear (released: no bias) | mlp
    adv_hidden: int = 256
    adv_objective: str = "grl_bt"  # grl_bt (released) | confusion (adversary on stop_gradient(z_n))
    n_attrs: int = 0  # known spurious attributes: heads on z_n predict them, an adversary on z_c (via GRL)
    logvar_clip: float = 10.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}; expected one of {KINDS}")
        if self.adversary not in ("linear", "mlp"):
            raise ValueError(f"adversary={self.adversary!r}; expected linear or mlp")
        if self.adv_objective not in ("grl_bt", "confusion"):
            raise ValueError(f"adv_objective={self.adv_objective!r}; expected grl_bt or confusion")


class Dense(nnx.Module):
    """y = x @ W (+ b), W annotated with logical axis names (b takes the output's name)."""

    def __init__(self, d_in: int, d_out: int, names: tuple, *, rngs: nnx.Rngs, bias: bool = True):
        init = nnx.initializers.lecun_normal()
        # eager_sharding=False: built with or without a mesh; placement comes from jitting init with shardings.
        self.kernel = nnx.Param(init(rngs.params(), (d_in, d_out)), out_sharding=names, eager_sharding=False)
        self.bias = (
            nnx.Param(jnp.zeros((d_out,)), out_sharding=names[1:], eager_sharding=False) if bias else None
        )

    def __call__(self, x: jax.Array, stop_params: bool = False) -> jax.Array:
        kernel = self.kernel[...]
        bias = None if self.bias is None else self.bias[...]
        if stop_params:  # the confusion objective moves the encoder through a frozen copy of the adversary
            kernel = jax.lax.stop_gradient(kernel)
            bias = None if bias is None else jax.lax.stop_gradient(bias)
        y = x @ kernel.astype(x.dtype)
        return y if bias is None else y + bias.astype(x.dtype)


class Adversary(nnx.Module):
    """Bias-free scalar (or n_out) predictor: linear, or a one-hidden-layer MLP."""

    def __init__(self, d_in: int, n_out: int, kind: str, hidden: int, *, rngs: nnx.Rngs):
        self.hidden = Dense(d_in, hidden, (None, "mlp"), rngs=rngs) if kind == "mlp" else None
        self.out = Dense(hidden if kind == "mlp" else d_in, n_out, ("mlp", None), rngs=rngs, bias=False)

    def __call__(self, z: jax.Array, stop_params: bool = False) -> jax.Array:
        if self.hidden is not None:
            z = jax.nn.relu(self.hidden(z, stop_params))
        return self.out(z, stop_params)


def _sample(mu: jax.Array, logvar: jax.Array, key: jax.Array | None) -> jax.Array:
    if key is None:  # evaluation is deterministic: the mean
        return mu
    return mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)


class RewardHead(nnx.Module):
    """h [B, H] -> dict of outputs; `reward` [B] always, the factors and auxiliary heads by `kind`."""

    def __init__(self, d_in: int, config: HeadConfig, *, rngs: nnx.Rngs):
        c = self.config = config
        self.enc1 = Dense(d_in, c.enc_hidden, ("embed", "mlp"), rngs=rngs)
        self.enc2 = Dense(c.enc_hidden, c.enc_hidden, ("mlp", None), rngs=rngs)
        if c.kind == "bt":
            self.reward_head = Dense(c.enc_hidden, 1, ("mlp", None), rngs=rngs, bias=False)
            return
        self.mu_c = Dense(c.enc_hidden, c.d_c, ("mlp", None), rngs=rngs)
        self.logvar_c = Dense(c.enc_hidden, c.d_c, ("mlp", None), rngs=rngs)
        self.reward_head = Dense(c.d_c, 1, (None, None), rngs=rngs, bias=False)  # no bias: BT ignores it
        if c.kind == "vib":
            return
        self.mu_n = Dense(c.enc_hidden, c.d_n, ("mlp", None), rngs=rngs)
        self.logvar_n = Dense(c.enc_hidden, c.d_n, ("mlp", None), rngs=rngs)
        self.dec1 = Dense(c.d_c + c.d_n, c.dec_hidden, (None, "mlp"), rngs=rngs)
        self.dec2 = Dense(c.dec_hidden, d_in, ("mlp", "embed"), rngs=rngs)
        self.adversary = Adversary(c.d_n, 1, c.adversary, c.adv_hidden, rngs=rngs)
        if c.n_attrs:
            self.attr_head = Dense(c.d_n, c.n_attrs, (None, None), rngs=rngs)
            self.attr_adversary = Adversary(c.d_c, c.n_attrs, c.adversary, c.adv_hidden, rngs=rngs)

    def encode(self, h: jax.Array) -> jax.Array:
        return jax.nn.relu(self.enc2(jax.nn.relu(self.enc1(h))))

    def __call__(self, h: jax.Array, *, lam: jax.Array | float = 1.0, key: jax.Array | None = None) -> dict:
        """key=None: deterministic (z = mu). lam scales the reversed gradient into z_n (and z_c for attrs)."""
        c = self.config
        h = h.astype(jnp.float32)
        s = self.encode(h)
        if c.kind == "bt":
            return {"reward": self.reward_head(s)[:, 0], "z_c": s}
        key_c, key_n = (None, None) if key is None else jax.random.split(key)
        mu_c = self.mu_c(s)
        logvar_c = jnp.clip(self.logvar_c(s), -c.logvar_clip, c.logvar_clip)
        z_c = _sample(mu_c, logvar_c, key_c)
        out = {"reward": self.reward_head(z_c)[:, 0], "z_c": z_c, "mu_c": mu_c, "logvar_c": logvar_c}
        if c.kind == "vib":
            return out
        mu_n = self.mu_n(s)
        logvar_n = jnp.clip(self.logvar_n(s), -c.logvar_clip, c.logvar_clip)
        z_n = _sample(mu_n, logvar_n, key_n)
        out.update(mu_n=mu_n, logvar_n=logvar_n, z_n=z_n)
        out["h_hat"] = self.dec2(jax.nn.relu(self.dec1(jnp.concatenate([z_c, z_n], axis=-1))))
        if c.adv_objective == "grl_bt":
            # The adversary minimizes its loss; the encoder receives -lam x its gradient through the GRL.
            out["adv"] = self.adversary(gradient_reversal(z_n, lam))[:, 0]
        else:
            # Confusion: the adversary learns on detached factors; the encoder moves z_n through a frozen copy.
            out["adv"] = self.adversary(jax.lax.stop_gradient(z_n))[:, 0]
            out["adv_encoder"] = self.adversary(z_n, stop_params=True)[:, 0]
        if c.n_attrs:
            out["attr_from_n"] = self.attr_head(z_n)
            out["attr_from_c"] = self.attr_adversary(gradient_reversal(z_c, lam))
        return out


def head_param_labels(params: nnx.State) -> nnx.State:
    """'adversary' for the adversaries' parameters, 'main' for everything else (optax.multi_transform)."""

    def label(path, _):
        names = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
        return "adversary" if any(n in ("adversary", "attr_adversary") for n in names) else "main"

    return jax.tree_util.tree_map_with_path(label, params)
