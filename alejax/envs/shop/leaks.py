"""The goal-leak scan: nothing that names the goal reaches the agent, in any scenario or view.

    python -m alejax.envs.shop.leaks --data shop.jsonl          # your released-schema records (exit 1 on a leak)
    python -m alejax.envs.shop.leaks --products 500 --split eval  # a generated world

Every task a scenario serves is played by several agents (the privileged expert, the two baselines, and a
prober that asks about every family in the shopper's lexicon, generically, and proposes a purchase), in both
views; every observation of every episode is checked:

- the target id, the persona's `__` keys and their explanations appear nowhere, `reason_key` nowhere outside
  the persona (nor in the system prompt or tool list, which also name no goal piece); an info before the
  episode's end carries no part of the goal;
- single-turn: the first observation carries the instruction (single+persona: the one without the clue, and
  the clue is in the persona); multi-turn: no instruction ever, and the shopper's opening names no goal
  attribute, option, budget or clue;
- a shopper reply names only the goal pieces of the families asked about (a generic question: one piece),
  and with a persona never the clue;
- the page itself (everything but the instruction, persona and shopper lines) is the same when the episode's
  actions are replayed on another task of the scenario: no page marks, orders or pre-selects anything by the
  goal. This catches leaks no word list can (a starred result, a goal option clicked in advance).

`scan(...)` returns a `LeakReport`: the coverage (records, episodes, observations per scenario) and the
findings (empty when nothing leaks).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import re
import sys

from alejax.envs.shop import catalog, persona
from alejax.envs.shop.actions import SEP
from alejax.envs.shop.agents import AGENTS, ExpertAgent
from alejax.envs.shop.catalog import mentions
from alejax.envs.shop.pages import SCENARIOS, VIEWS, ShopEnv
from alejax.envs.shop.shopper import families_in

MARKERS = {"Shopper:": "shopper", "Persona:": "persona", "Instruction:": "instruction"}
INFO_BEFORE_END = {"step", "valid", "page", "scenario", "split"}
MIN_HIDDEN_TEXT = 9  # a `__` explanation this long never appears; a short one (5kg) may be the clue itself


class ProberAgent:
    """Asks about every family in the lexicon, generically, and proposes, then buys the first result: the
    questions a curious policy could ask (in single-turn scenarios they are reported invalid actions)."""

    def reset(self, env, observation: str) -> None:
        self.questions = [f"{words[0]}有要求吗？" for words in catalog.FAMILY_KEYWORDS.values()]
        self.questions += ["还有别的吗？", "还有其他要求吗？", "补充一下？", "可以下单吗？", "随便聊聊"]
        self.first = AGENTS["first_result"]()
        self.first.reset(env, observation)

    def act(self, observation: str) -> str:
        if self.questions:
            return f"ask[{self.questions.pop(0)}]"
        return self.first.act(observation)


SCAN_AGENTS = {"expert": ExpertAgent, "first_result": AGENTS["first_result"], "random": AGENTS["random"],
               "prober": ProberAgent}  # fmt: skip


def channels(observation: str, instruction: str = "") -> dict[str, list[str]]:
    """An observation's text by channel: shopper lines, persona, instruction, and the page itself. Both views:
    the standard one marks every channel; the compact one writes the instruction as a plain line (pass it as
    `instruction` to find it)."""
    flat = instruction.replace("\n", " ")  # an instruction of several lines stays one token
    if instruction:
        observation = observation.replace(instruction, flat)
    tokens = re.split(re.escape(SEP) + "|\n", observation)
    out = {"shopper": [], "persona": [], "instruction": [], "page": []}
    k = 0
    while k < len(tokens):
        marker = MARKERS.get(tokens[k])
        if marker and k + 1 < len(tokens):
            out[marker].append(tokens[k + 1])
            k += 2
        else:
            out["instruction" if flat and tokens[k] == flat else "page"].append(tokens[k])
            k += 1
    return out


def goal_forms(task) -> dict[str, list[str]]:
    """Every surface form of the task's goal pieces, by kind."""
    return {
        "att": list(task.attributes),
        "opt": list(task.options.values()),
        "budget": [f for s in task.slots if s.kind == "budget" for f in s.forms],
        "clue": list(task.clue.forms) if task.clue is not None else [],
    }


def hidden_texts(raw_persona) -> list[str]:
    """The explanations under a record's `__` keys, at any depth (long enough to be unmistakable)."""
    if isinstance(raw_persona, str):
        try:
            raw_persona = json.loads(raw_persona)
        except ValueError:
            return []
    found = []

    def walk(value):
        if isinstance(value, dict):
            for key, item in value.items():
                if str(key).strip().startswith("__"):
                    found.append(persona.text_of(item))
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(raw_persona)
    return [t for t in found if len(t) >= MIN_HIDDEN_TEXT]


@dataclasses.dataclass
class Finding:
    scenario: str
    view: str
    asin: str
    agent: str
    step: int  # the observation's index in the episode (0: after reset; -1: the prompt and tools)
    what: str
    text: str

    def __str__(self) -> str:
        return (
            f"{self.scenario}/{self.view} {self.asin} ({self.agent}, observation {self.step}): {self.what}: "
            f"{self.text[:160]!r}"
        )


@dataclasses.dataclass
class LeakReport:
    coverage: dict  # scenario -> {records (set of ids), episodes, observations, replayed}
    findings: list[Finding]

    @property
    def observations(self) -> int:
        return sum(c["observations"] for c in self.coverage.values())

    @property
    def records(self) -> set:
        return set().union(*(c["records"] for c in self.coverage.values())) if self.coverage else set()

    def summary(self) -> str:
        cells = "; ".join(
            f"{s}: {len(c['records'])} records, {c['episodes']} episodes, {c['observations']} observations"
            for s, c in self.coverage.items()
        )
        head = (
            f"leak scan: {len(self.records)} records x {len(self.coverage)} scenarios, {self.observations} "
            f"observations scanned and {sum(c['replayed'] for c in self.coverage.values())} replayed on "
            f"another task ({cells}); {len(self.findings)} leaks"
        )
        return "\n".join([head, *(f"  {f}" for f in self.findings[:20])])

    def as_dict(self) -> dict:
        return {
            "records": len(self.records),
            "scenarios": len(self.coverage),
            "observations": self.observations,
            "by_scenario": {
                s: {**{k: v for k, v in c.items() if k != "records"}, "records": len(c["records"])}
                for s, c in self.coverage.items()
            },
            "leaks": len(self.findings),
        }


def _play(env, agent, task: int) -> tuple[list[str], list[str], list[dict]]:
    obs, info = env.reset(7, task=task)
    agent.reset(env, obs)
    seen, taken, infos = [obs], [], [info]
    done = False
    while not done:
        taken.append(agent.act(obs))
        obs, _, terminated, truncated, info = env.step(taken[-1])
        done = terminated or truncated
        seen.append(obs)
        infos.append(info)
    return seen, taken, infos


def check_episode(env, task, hidden: list[str], seen: list[str], taken: list[str], infos: list[dict]):
    """(step, what, text) of each leak in one played episode (see the module docstring)."""
    multi, with_persona = env.scenario.multi_turn, env.scenario.persona
    instruction = env.instruction()
    forms = goal_forms(task)
    every_goal_form = [f for group in forms.values() for f in group]
    found = []
    fixed = [env.system_prompt, json.dumps(env.tools, ensure_ascii=False)]
    for step, text in [(-1, t) for t in fixed] + list(enumerate(seen)):
        if task.asin in text:
            found.append((step, "the target id", text))
        if "__" in text or any(h in text for h in hidden):
            found.append((step, "a hidden persona key or its explanation", text))
        # reason_key outside the persona (a flat persona shows its field names; which one is the clue's is
        # the secret)
        parts = channels(text, instruction)
        if task.reason_key and any(
            task.reason_key in t for k, v in parts.items() if k != "persona" for t in v
        ):
            found.append((step, "reason_key", text))
    for text in fixed:
        if any(mentions(text, f) for f in every_goal_form):
            found.append((-1, "the system prompt or tools name a goal piece", text))
    for step, info in enumerate(infos[:-1]):
        if not set(info) <= INFO_BEFORE_END:
            found.append((step, "an info before the end carries the goal", str(sorted(info))))
    first = channels(seen[0], instruction)
    if multi:
        if len(first["shopper"]) != 1 or first["instruction"]:
            found.append((0, "a multi-turn episode does not open with the shopper's line alone", seen[0]))
        elif any(mentions(first["shopper"][0], f) for f in every_goal_form):
            found.append((0, "the opening names a goal piece", first["shopper"][0]))
    else:
        want = (task.instruction_persona if with_persona else task.instruction).replace("\n", " ")
        if first["instruction"] != [want] or first["shopper"]:
            found.append((0, "the first observation is not the scenario's instruction", seen[0]))
    if with_persona:
        if any(mentions(text, f) for text in first["instruction"] for f in forms["clue"]):
            found.append((0, "the instruction names the persona's clue", seen[0]))
        if not first["persona"] or not any(mentions(first["persona"][0], f) for f in forms["clue"]):
            found.append((0, "the persona shown lacks the clue", seen[0]))
    elif first["persona"]:
        found.append((0, "a persona in a scenario without one", seen[0]))
    known = tuple(dict.fromkeys(s.family for s in task.slots))
    for step, (action, observation) in enumerate(zip(taken, seen[1:]), 1):
        parts = channels(observation, instruction)
        if multi and parts["instruction"]:
            found.append((step, "a multi-turn observation carries an instruction", observation))
        for said in parts["shopper"]:
            if not (multi and action.startswith("ask[")):
                found.append((step, "a shopper line nobody asked for", said))
                continue
            named = [s for s in task.slots if any(mentions(said, f) for f in s.forms)]
            asked = families_in(action, known)
            if not (all(s.family in asked for s in named) or (not asked and len(named) <= 1)):
                found.append((step, f"the reply names what was not asked ({action})", said))
            if with_persona and any(mentions(said, f) for f in forms["clue"]):
                found.append((step, "the shopper says the persona's clue", said))
    return found


def check_replay(env, other_task: int, seen: list[str], taken: list[str]) -> tuple[list, int]:
    """Replays `taken` on `other_task`: (leaks where a page differs, observations compared)."""
    instruction = env.instruction()
    mine = [channels(obs, instruction)["page"] for obs in seen]
    obs, _ = env.reset(7, task=other_task)
    theirs = [channels(obs, env.instruction())["page"]]
    for action in taken:
        if env.done:
            break
        obs, *_ = env.step(action)
        theirs.append(channels(obs, env.instruction())["page"])
    found = []
    for step, (a, b) in enumerate(itertools.zip_longest(mine, theirs)):
        if a != b:
            found.append((step, "the page depends on the task (replayed on another)", f"{a} != {b}"))
            break
    return found, len(mine)


def scan(world, records: list[dict] | None = None, scenarios=tuple(SCENARIOS), views=VIEWS,
         agents: dict | None = None, split: str = "all", limit: int | None = None) -> LeakReport:  # fmt: skip
    """Every task each scenario serves from `split` of `world` (a generated World or a loaded one; the first
    `limit` of them), played by each agent in each view. `records`: the raw released records, whose `__`
    persona texts are looked for."""
    agents = agents or SCAN_AGENTS
    raw = {str(r.get("asin")): r for r in records or []}
    coverage = {s: {"records": set(), "episodes": 0, "observations": 0, "replayed": 0} for s in scenarios}
    findings = []
    for scenario, view in itertools.product(scenarios, views):
        env = ShopEnv(scenario, world=world, split=split, view=view)
        pool = [int(i) for i in env._pool if world.task(int(i)) is not None][:limit]
        cell = coverage[scenario]
        for k, i in enumerate(pool):
            task = world.task(i)
            cell["records"].add(task.asin)
            hidden = hidden_texts(raw.get(task.asin, {}).get("user_persona"))
            for name, agent_class in agents.items():
                seen, taken, infos = _play(env, agent_class(), i)
                found = check_episode(env, task, hidden, seen, taken, infos)
                cell["episodes"] += 1
                cell["observations"] += len(seen)
                if len(pool) > 1:
                    more, compared = check_replay(env, pool[(k + 1) % len(pool)], seen, taken)
                    found += more
                    cell["replayed"] += compared
                findings += [Finding(scenario, view, task.asin, name, *f) for f in found]
    return LeakReport(coverage, findings)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="released-schema JSONL (else a generated world)")
    parser.add_argument("--unparsed-budget", default="no_price_term", help="exclude | no_price_term")
    parser.add_argument("--products", type=int, default=500)
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--split", default="all")
    parser.add_argument("--limit", type=int, default=None, help="tasks per scenario (default: every one)")
    args = parser.parse_args(argv)
    if args.data:
        from alejax.envs.shop.loader import load_jsonl

        world = load_jsonl(args.data, args.unparsed_budget)
        with open(args.data, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    else:
        from alejax.envs.shop.world import get_world

        world, records = get_world(args.world_seed, args.products), None
    report = scan(world, records, split=args.split, limit=args.limit)
    print(report.summary())
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
