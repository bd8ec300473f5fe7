"""Gradient reversal: identity forward, -lam x gradient backward; lam is an ordinary (traced) argument."""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp


@jax.custom_vjp
def gradient_reversal(x: jax.Array, lam: jax.Array | float) -> jax.Array:
    """Returns x; the backward pass multiplies the incoming gradient by -lam.

    lam is a regular argument (not nondiff_argnums), so a schedule computed from the traced step works under
    jit without recompiling; it receives a zero cotangent.
    """
    return x


def _grl_fwd(x, lam):
    return x, jnp.asarray(lam)


def _grl_bwd(lam, g):
    return ((-lam * g).astype(g.dtype), jnp.zeros_like(lam))


gradient_reversal.defvjp(_grl_fwd, _grl_bwd)


def _const(progress: jax.Array, lam_max: float) -> jax.Array:
    return jnp.full_like(progress, lam_max)


def _dann(progress: jax.Array, lam_max: float) -> jax.Array:
    # Ganin & Lempitsky's ramp 2/(1+exp(-10p))-1: the encoder is not pushed before the adversary has learned.
    return lam_max * (2.0 / (1.0 + jnp.exp(-10.0 * progress)) - 1.0)


GRL_SCHEDULES: dict[str, Callable[[jax.Array, float], jax.Array]] = {"const": _const, "dann": _dann}


def grl_lambda(schedule: str, step: jax.Array, total_steps: int, lam_max: float = 1.0) -> jax.Array:
    """lam at `step` (traced or not) under the named schedule; progress p = step / total_steps in [0, 1]."""
    if schedule not in GRL_SCHEDULES:
        raise KeyError(f"grl_schedule={schedule!r}; known: {sorted(GRL_SCHEDULES)}")
    progress = jnp.clip(jnp.asarray(step, jnp.float32) / max(total_steps, 1), 0.0, 1.0)
    return GRL_SCHEDULES[schedule](progress, lam_max)


def dann_lambda(progress: float) -> float:
    """The DANN ramp as a Python float (for logging and tests)."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0
