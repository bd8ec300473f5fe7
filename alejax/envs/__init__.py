"""Text environments: the protocol, the registry (`make("shop/single")`), env pools and the env families."""

from alejax.envs.base import (
    Env,
    EnvPool,
    ResetResult,
    StepResult,
    ThreadEnvPool,
    aborted_result,
    make,
    register,
    registered,
    replay,
)

__all__ = [
    "Env",
    "EnvPool",
    "ResetResult",
    "StepResult",
    "ThreadEnvPool",
    "aborted_result",
    "make",
    "register",
    "registered",
    "replay",
]
