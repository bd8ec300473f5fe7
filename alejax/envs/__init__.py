"""Text environments: the protocol, the registry (`make("shop/single")`), env pools and the env families."""

from alejax.envs.base import (
    Env,
    ResetResult,
    StepResult,
    make,
    register,
    registered,
    replay,
)
from alejax.envs.pools import EnvPool, ThreadEnvPool, aborted_result, make_env_pool

__all__ = [
    "Env",
    "EnvPool",
    "ResetResult",
    "StepResult",
    "ThreadEnvPool",
    "aborted_result",
    "make",
    "make_env_pool",
    "register",
    "registered",
    "replay",
]
