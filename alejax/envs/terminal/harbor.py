"""Harbor task directories and Terminal-Bench 1 directories, played in alejax's sandbox.

A Harbor task (`task.toml` schema 1.0-1.4) is

    instruction.md        what the agent is told
    task.toml             [task] name, [metadata], [verifier] timeout_sec/env/user, [agent] timeout_sec,
                          [environment] docker_image/cpus/memory_mb/storage_mb/workdir/network_mode, [solution] env
    environment/          Dockerfile (or a compose file) and the files it COPYs
    solution/solve.sh     the oracle
    tests/test.sh         the verifier, with its fixtures; it writes /logs/verifier/reward.txt (one float)
                          or /logs/verifier/reward.json (named numbers)

A Terminal-Bench 1 directory (`task.yaml`, `Dockerfile`, `solution.sh`, `run-tests.sh`, `tests/`) is mapped as
Harbor's adapter maps it: task.yaml's instruction, max_agent_timeout_sec and max_test_timeout_sec become the
instruction and the agent / verifier timeouts, solution.sh the oracle, and run-tests.sh is run from a
generated test.sh that writes reward.txt (1 iff run-tests.sh exits 0).

There is no container runtime here: a task runs in alejax's `Sandbox` on the host's root filesystem. Of the
Dockerfile, WORKDIR, ENV and COPY of files from environment/ are applied; everything else (FROM, RUN, USER,
...) is not, and a warning per task names those steps. memory_mb maps to `Limits.memory_bytes` (address
space per process), storage_mb to `Limits.disk_bytes`; cpus is not enforced (no cgroups) and says so.

The verifier contract: after the agent, tests/ is copied into `/tests` (the sandbox's copy-in, never through a
symlink the agent planted), test.sh runs there with `TEST_DIR=/tests` and the [verifier] env, and the reward is
read (the sandbox's read_file: no symlinks, size-capped) from reward.txt, else reward.json: its "reward" key when
present, else the mean of its numbers (every number is kept in info["rewards"]). Where the kernel refuses mount
namespaces ("plain" mode) the sandbox cannot have /tests, /logs, /solution or the task's workdir: they live
in the episode's private directory, TEST_DIR points there, and the literal paths in test.sh, run-tests.sh and
solve.sh are rewritten to them (other files in tests/ are copied as they are: prefer $TEST_DIR in them).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shlex
import tomllib
import warnings

from alejax.envs.terminal import sandbox as sandbox_module
from alejax.envs.terminal.sandbox import Limits, Sandbox, SandboxError, SandboxFileError

SCHEMA_VERSIONS = ("1.0", "1.1", "1.2", "1.3", "1.4")
DEFAULT_TIMEOUT_S = 600.0  # Harbor's default agent and verifier timeouts
TESTS_DIR, LOGS_DIR, SOLUTION_DIR = "/tests", "/logs", "/solution"
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    instruction: str
    setup: str
    tests: str
    solution: str
    network: bool = False  # touches the network: only run where the sandbox can cut it off
    max_turns: int = 20


def load_own_task_dir(path: str) -> Task:
    """A task in alejax's own layout: instruction.md, setup.sh, run-tests.sh, solution.sh, task.json
    (optional). `harbor.load_task_dir` reads any layout (Harbor, Terminal-Bench 1, this one). Raises
    ValueError when the directory or its instruction or tests are missing (empty tests would always pass)."""
    if not os.path.isdir(path):
        raise ValueError(f"{path}: no such task directory")
    missing = [
        name for name in ("instruction.md", "run-tests.sh") if not os.path.isfile(os.path.join(path, name))
    ]
    if missing:
        raise ValueError(
            f"{path}: not a task directory (missing {', '.join(missing)}; Harbor needs task.toml, "
            "Terminal-Bench 1 task.yaml)"
        )

    def read(name: str, default: str = "") -> str:
        file = os.path.join(path, name)
        return open(file).read() if os.path.exists(file) else default

    meta = json.loads(read("task.json", "{}"))
    return Task(
        name=meta.get("name", os.path.basename(os.path.normpath(path))),
        instruction=read("instruction.md").strip(),
        setup=read("setup.sh"),
        tests=read("run-tests.sh"),
        solution=read("solution.sh"),
        network=bool(meta.get("network", False)),
        max_turns=int(meta.get("max_turns", 20)),
    )


class HarborTaskError(ValueError):
    """A task directory that cannot be loaded; the message names the file and the field."""


@dataclasses.dataclass(frozen=True)
class HarborTask(Task):
    """A task read from a Harbor (or Terminal-Bench 1) directory; `solution` holds solve.sh's text."""

    path: str = ""
    layout: str = "harbor"  # "harbor" or "terminal-bench-1"
    tests_dir: str = ""  # host directory copied to /tests after the agent
    test_script: str = ""  # the text placed at /tests/test.sh
    solution_dir: str = ""  # host directory copied to /solution when the oracle plays
    workdir: str = "/app"
    env: tuple[tuple[str, str], ...] = ()  # Dockerfile ENV, in the agent's shell and the verifier
    copies: tuple[tuple[str, str], ...] = ()  # Dockerfile COPY: (host path, absolute sandbox path)
    verifier_env: tuple[tuple[str, str], ...] = ()
    solution_env: tuple[tuple[str, str], ...] = ()
    agent_timeout_s: float = DEFAULT_TIMEOUT_S
    verifier_timeout_s: float = DEFAULT_TIMEOUT_S
    memory_bytes: int | None = None
    disk_bytes: int | None = None
    network_mode: str = ""  # what the task asks for ("public", "allowlist", "no-network"; "" = not said)
    metadata: tuple[tuple[str, object], ...] = ()
    not_applied: tuple[str, ...] = ()  # what the sandbox cannot reproduce (warned about at load)

    @property
    def needs_network(self) -> bool:
        return self.network_mode in ("public", "allowlist")


# ---- loading ---------------------------------------------------------------------------------------------


def is_task_dir(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, name)) for name in ("task.toml", "task.yaml"))


def load_task_dir(path: str) -> Task:
    """A task from a directory: Harbor (task.toml), Terminal-Bench 1 (task.yaml) or alejax's own layout."""
    return load_harbor_task(path) if is_task_dir(path) else load_own_task_dir(path)


def load_harbor_task(path: str) -> HarborTask:
    """A Harbor task directory (task.toml) or a Terminal-Bench 1 directory (task.yaml); warns once with
    everything the sandbox will not reproduce. Raises HarborTaskError naming the file and field."""
    path = os.path.abspath(path)
    if os.path.isfile(os.path.join(path, "task.toml")):
        task = _load_harbor(path)
    elif os.path.isfile(os.path.join(path, "task.yaml")):
        task = _load_terminal_bench_1(path)
    else:
        raise HarborTaskError(f"{path}: neither task.toml (Harbor) nor task.yaml (Terminal-Bench 1) is there")
    if task.not_applied:
        warnings.warn(
            f"task {task.name!r} runs on the host's root filesystem in alejax's sandbox (no container "
            "runtime); not applied: " + "; ".join(task.not_applied),
            RuntimeWarning,
            stacklevel=2,
        )
    return task


def _read_text(path: str, name: str) -> str:
    file = os.path.join(path, name)
    if not os.path.isfile(file):
        raise HarborTaskError(f"{file}: missing (a task directory needs it)")
    with open(file, encoding="utf-8") as handle:
        return handle.read()


def _table(config: dict, section: str, file: str) -> dict:
    value = config.get(section, {})
    if not isinstance(value, dict):
        raise HarborTaskError(f"{file}: [{section}] must be a table, got {type(value).__name__}")
    return value


def _number(table: dict, key: str, section: str, file: str, default: float | None) -> float | None:
    value = table.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
        raise HarborTaskError(f"{file}: [{section}] {key} must be a positive number, got {value!r}")
    return float(value)


def _size(table: dict, key_mb: str, key_old: str, section: str, file: str) -> int | None:
    """memory_mb / storage_mb (MiB), or the pre-1.1 spellings memory / storage ("2G", "512M")."""
    if key_mb in table:
        return int(_number(table, key_mb, section, file, None) * (1 << 20))
    if key_old not in table:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(table[key_old]), re.IGNORECASE)
    if not match or float(match.group(1)) <= 0:
        raise HarborTaskError(
            f"{file}: [{section}] {key_old} must be a size like '2G', got {table[key_old]!r}"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _env_table(table: dict, section: str, file: str) -> tuple[tuple[str, str], ...]:
    env = table.get("env", {})
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and re.fullmatch(r"[A-Za-z_]\w*", k) and isinstance(v, (str, int, float, bool))
        for k, v in env.items()
    ):
        raise HarborTaskError(f"{file}: [{section}] env must map variable names to strings, got {env!r}")
    return tuple((k, str(v)) for k, v in env.items())


def _network_mode(config: dict, file: str) -> str:
    """The strongest network need of the environment, agent and verifier phases ("" when none is said)."""
    modes = []
    for section in ("environment", "agent", "verifier"):
        table = _table(config, section, file)
        if "network_mode" in table:
            mode = table["network_mode"]
            if mode not in ("public", "no-network", "allowlist"):
                raise HarborTaskError(
                    f"{file}: [{section}] network_mode must be public, no-network or allowlist, got {mode!r}"
                )
            modes.append(mode)
        elif "allow_internet" in table:  # the pre-1.4 spelling
            if not isinstance(table["allow_internet"], bool):
                raise HarborTaskError(f"{file}: [{section}] allow_internet must be true or false")
            modes.append("public" if table["allow_internet"] else "no-network")
    for mode in ("allowlist", "public", "no-network"):
        if mode in modes:
            return mode
    return ""


def _load_harbor(path: str) -> HarborTask:
    file = os.path.join(path, "task.toml")
    try:
        config = tomllib.loads(_read_text(path, "task.toml"))
    except tomllib.TOMLDecodeError as error:
        raise HarborTaskError(f"{file}: not valid TOML ({error})") from None
    version = str(config.get("schema_version", config.get("version", "1.0")))
    field = "schema_version" if "schema_version" in config else "version"
    if version not in SCHEMA_VERSIONS:
        raise HarborTaskError(f"{file}: {field} {version!r} is not one of {', '.join(SCHEMA_VERSIONS)}")
    if config.get("steps"):
        raise HarborTaskError(f"{file}: [[steps]] (multi-step tasks) are not supported yet")
    task_table, environment = _table(config, "task", file), _table(config, "environment", file)
    verifier, agent = _table(config, "verifier", file), _table(config, "agent", file)
    solution = _table(config, "solution", file)
    metadata = _table(config, "metadata", file)
    not_applied = []
    for section, table in (("verifier", verifier), ("agent", agent)):
        if table.get("user") not in (None, "root"):
            not_applied.append(
                f"[{section}] user = {table['user']!r} (one unprivileged sandbox user runs all)"
            )
    cpus = _number(environment, "cpus", "environment", file, None)
    if cpus is not None:
        not_applied.append(f"[environment] cpus = {cpus:g} (no cgroups: not enforced)")
    if environment.get("gpus"):
        not_applied.append(f"[environment] gpus = {environment['gpus']!r} (no GPU in the sandbox)")

    env_dir = os.path.join(path, "environment")
    dockerfile = os.path.join(env_dir, "Dockerfile")
    compose = [
        n
        for n in ("docker-compose.yaml", "docker-compose.yml", "compose.yaml")
        if os.path.isfile(os.path.join(env_dir, n))
    ]
    image = environment.get("docker_image")
    workdir, env, copies = "/app", (), ()
    if os.path.isfile(dockerfile):
        workdir, env, copies, skipped = parse_dockerfile(dockerfile, env_dir)
        not_applied += skipped
    elif image:
        not_applied.append(f"[environment] docker_image = {image!r} (the host's root filesystem stands in)")
    elif not compose:
        raise HarborTaskError(f"{env_dir}: needs a Dockerfile, a compose file or [environment] docker_image")
    if compose:
        not_applied.append(f"environment/{compose[0]} (services are not started)")
    if "workdir" in environment:
        if not isinstance(environment["workdir"], str) or not environment["workdir"].startswith("/"):
            raise HarborTaskError(f"{file}: [environment] workdir must be an absolute path")
        workdir = environment["workdir"]

    tests_dir = os.path.join(path, "tests")
    name = task_table.get("name") or os.path.basename(path)
    if not isinstance(name, str):
        raise HarborTaskError(f"{file}: [task] name must be a string")
    solution_dir = os.path.join(path, "solution")
    return HarborTask(
        name=name,
        instruction=_read_text(path, "instruction.md").strip(),
        setup="",
        tests=_read_text(tests_dir, "test.sh"),
        solution=_read_text(solution_dir, "solve.sh") if os.path.isdir(solution_dir) else "",
        max_turns=50,
        path=path,
        layout="harbor",
        tests_dir=tests_dir,
        test_script=_read_text(tests_dir, "test.sh"),
        solution_dir=solution_dir if os.path.isfile(os.path.join(solution_dir, "solve.sh")) else "",
        workdir=workdir,
        env=env,
        copies=copies,
        verifier_env=_env_table(verifier, "verifier", file),
        solution_env=_env_table(solution, "solution", file),
        agent_timeout_s=_number(agent, "timeout_sec", "agent", file, DEFAULT_TIMEOUT_S),
        verifier_timeout_s=_number(verifier, "timeout_sec", "verifier", file, DEFAULT_TIMEOUT_S),
        memory_bytes=_size(environment, "memory_mb", "memory", "environment", file),
        disk_bytes=_size(environment, "storage_mb", "storage", "environment", file),
        network_mode=_network_mode(config, file),
        metadata=tuple(sorted(metadata.items())),
        not_applied=tuple(not_applied),
    )


# Terminal-Bench 1 run-tests.sh exits 0 iff the task is solved; Harbor's adapter turns that into a reward file.
_TB1_TEST_SH = """#!/bin/bash
# Generated from Terminal-Bench 1's run-tests.sh: reward 1 iff it exits 0.
mkdir -p {logs}/verifier
bash "$TEST_DIR/run-tests.sh"
if [ $? -eq 0 ]; then echo 1 > {logs}/verifier/reward.txt; else echo 0 > {logs}/verifier/reward.txt; fi
"""


def _load_terminal_bench_1(path: str) -> HarborTask:
    file = os.path.join(path, "task.yaml")
    meta = _read_yaml(_read_text(path, "task.yaml"), file)
    instruction = meta.get("instruction")
    if instruction is None and isinstance(meta.get("descriptions"), list):  # the oldest task.yaml form
        instruction = next((d.get("description") for d in meta["descriptions"] if isinstance(d, dict)), None)
    if not isinstance(instruction, str) or not instruction.strip():
        raise HarborTaskError(f"{file}: instruction must be a non-empty string")
    not_applied = []
    workdir, env, copies = "/app", (), ()
    if os.path.isfile(os.path.join(path, "Dockerfile")):
        workdir, env, copies, not_applied = parse_dockerfile(os.path.join(path, "Dockerfile"), path)
    if os.path.isfile(os.path.join(path, "docker-compose.yaml")):
        not_applied.append("docker-compose.yaml (services are not started)")
    _read_text(path, "run-tests.sh")
    return HarborTask(
        name=os.path.basename(path),
        instruction=instruction.strip(),
        setup="",
        tests=_read_text(path, "run-tests.sh"),
        solution=_read_text(path, "solution.sh"),
        max_turns=50,
        path=path,
        layout="terminal-bench-1",
        tests_dir=os.path.join(path, "tests") if os.path.isdir(os.path.join(path, "tests")) else "",
        test_script=_TB1_TEST_SH,
        workdir=workdir,
        env=env,
        copies=copies,
        agent_timeout_s=_number(meta, "max_agent_timeout_sec", "task.yaml", file, DEFAULT_TIMEOUT_S),
        verifier_timeout_s=_number(meta, "max_test_timeout_sec", "task.yaml", file, DEFAULT_TIMEOUT_S),
        metadata=tuple(
            sorted((k, v) for k, v in meta.items() if k in ("category", "difficulty", "tags", "author_email"))
        ),
        not_applied=tuple(not_applied),
    )


def _read_yaml(text: str, file: str) -> dict:
    import yaml  # PyYAML (installed here); imported lazily: only Terminal-Bench 1 dirs need it

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise HarborTaskError(f"{file}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise HarborTaskError(f"{file}: must be a mapping of fields, got {type(data).__name__}")
    return data


# ---- the Dockerfile ----------------------------------------------------------------------------------------


def _dockerfile_lines(text: str) -> list[str]:
    """Instructions with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued RUN
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        lines.append((current + stripped).strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def _expand(value: str, variables: dict) -> str:
    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", lambda m: variables.get(m.group(1) or m.group(2), ""), value)


def parse_dockerfile(dockerfile: str, context: str):
    """(workdir, env, copies, steps not applied) of a Dockerfile whose build context is `context`.

    WORKDIR and ENV are applied (ARG defaults expand in them); COPY / ADD of files inside the build context
    become copies into the sandbox; every other step (FROM, RUN, USER, COPY --from, ADD of a URL, ...) is
    listed as not applied."""
    with open(dockerfile, encoding="utf-8") as handle:
        instructions = _dockerfile_lines(handle.read())
    workdir, env, variables, copies, skipped = "/", {}, {}, [], []
    context = os.path.realpath(context)
    for line in instructions:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "WORKDIR":
            workdir = os.path.normpath(
                os.path.join(workdir, _expand(rest.strip("\"'"), {**variables, **env}))
            )
        elif keyword in ("ENV", "ARG"):
            words = shlex.split(rest)
            pairs = (
                [w.split("=", 1) for w in words if "=" in w]
                if "=" in (words[0] if words else "")
                else [[words[0], " ".join(words[1:])]]
                if words
                else []
            )
            for key, value in pairs:
                value = _expand(value, {**variables, **env})
                (env if keyword == "ENV" else variables)[key] = value
        elif keyword in ("COPY", "ADD"):
            copy = _copy_step(rest, context, workdir, {**variables, **env})
            if copy is None:
                skipped.append(f"{keyword} {rest}")
            else:
                copies.extend(copy)
        elif keyword in ("LABEL", "EXPOSE", "MAINTAINER"):
            continue  # metadata: nothing to apply
        else:
            skipped.append(f"{keyword} {rest}" if keyword != "RUN" else f"RUN {rest[:200]}")
    if workdir == "/":
        workdir = "/app"
    return workdir, tuple(env.items()), tuple(copies), skipped


def _copy_step(rest: str, context: str, workdir: str, variables: dict):
    """[(host path, sandbox path)] for a COPY of build-context files, None when it cannot be applied."""
    if rest.startswith("["):
        try:
            words = json.loads(rest)
        except json.JSONDecodeError:
            return None
    else:
        words = shlex.split(rest)
    if any(w.startswith("--") and not w.startswith(("--chown", "--chmod")) for w in words):
        return None  # --from=stage, --link, ...: not files of the context
    words = [_expand(w, variables) for w in words if not w.startswith("--")]
    if len(words) < 2:
        return None
    *sources, dest = words
    dest = os.path.normpath(os.path.join(workdir, dest)) + ("/" if dest.endswith("/") else "")
    copies = []
    for source in sources:
        if "://" in source or any(c in source for c in "*?["):
            return None
        host = os.path.realpath(os.path.join(context, source))
        if not (host == context or host.startswith(context + os.sep)) or not os.path.exists(host):
            return None
        if os.path.isdir(host) or dest.endswith("/") or len(sources) > 1:
            target = dest.rstrip("/") if os.path.isdir(host) else os.path.join(dest, os.path.basename(host))
        else:
            target = dest
        copies.append((host, target))
    return copies


# ---- running: the sandbox, the oracle, the verifier ---------------------------------------------------------


def _paths(task: HarborTask, sandbox: Sandbox) -> dict:
    """Where /tests, /logs, /solution and the task's workdir are in this sandbox (plain mode: in the
    episode's private directory)."""
    if sandbox.mode == "namespaces":
        return {TESTS_DIR: TESTS_DIR, LOGS_DIR: LOGS_DIR, SOLUTION_DIR: SOLUTION_DIR}
    paths = {p: os.path.join(sandbox.root, p.strip("/")) for p in (TESTS_DIR, LOGS_DIR, SOLUTION_DIR)}
    return {**paths, task.workdir: sandbox.workdir}


def _rewrite(script: str, paths: dict) -> str:
    """The literal /tests, /logs and /solution of a script, pointed at where this sandbox keeps them."""
    for literal, actual in paths.items():
        if literal != actual:
            script = re.sub(rf"(?<![\w./-]){re.escape(literal)}(?=/|\b|$)", actual, script)
    return script


def sandbox_limits(task: HarborTask, limits: Limits) -> Limits:
    """The env's limits with task.toml's memory and storage (and no command longer than the agent's time)."""
    changes = {"timeout_s": min(limits.timeout_s, task.agent_timeout_s)}
    if task.memory_bytes:
        changes["memory_bytes"] = task.memory_bytes
    if task.disk_bytes:
        changes["disk_bytes"] = task.disk_bytes
    return dataclasses.replace(limits, **changes)


def start_sandbox(task: HarborTask, limits: Limits, base_dir: str | None) -> Sandbox:
    """A sandbox set up as the task's Dockerfile would (as far as it can): workdir, ENV and COPYs."""
    recipe, skipped = sandbox_recipe(task, limits)
    return furnish_sandbox(task, recipe.make(base_dir), skipped)


@dataclasses.dataclass(frozen=True)
class SandboxRecipe:
    """A task's sandbox before the task's files and ENV go in. Tasks with equal recipes (most: /app and the
    same limits) can start from the same sandboxes made ahead (`warm.py`)."""

    limits: Limits
    workdir: str | None = None  # None: plain mode (no mount namespace)
    writable_dirs: tuple[str, ...] = ()

    def make(self, base_dir: str | None) -> Sandbox:
        if self.workdir is not None:
            return Sandbox(self.limits, base_dir, workdir=self.workdir, writable_dirs=self.writable_dirs)
        sandbox = Sandbox(self.limits, base_dir)
        for path in (TESTS_DIR, LOGS_DIR, SOLUTION_DIR):  # beside the work dir, owned by the agent's uid
            directory = os.path.join(sandbox.root, path.strip("/"))
            os.mkdir(directory, 0o700)
            if sandbox.uid is not None:
                os.chown(directory, sandbox.uid, sandbox.uid)
        return sandbox


def sandbox_recipe(task: HarborTask, limits: Limits) -> tuple[SandboxRecipe, list[str]]:
    """The task's `SandboxRecipe`, and what of its Dockerfile it cannot apply."""
    limits = sandbox_limits(task, limits)
    if sandbox_module.capabilities()["mode"] != "namespaces":
        return SandboxRecipe(limits), []
    extra = sorted(
        {"/" + dest.strip("/").split("/")[0] for _, dest in task.copies}
        - {TESTS_DIR, LOGS_DIR, SOLUTION_DIR, "/" + task.workdir.strip("/").split("/")[0]}
    )
    writable, skipped = [TESTS_DIR, LOGS_DIR, SOLUTION_DIR], []
    for top in extra:  # a COPY outside the workdir needs its own writable directory
        try:
            writable.append(Sandbox._check_path(top))
        except SandboxError:  # a reserved system path (/usr, /etc ...): that COPY fails and is warned about
            pass
    workdir = task.workdir
    try:
        Sandbox._check_path(workdir)
    except SandboxError:
        skipped.append(f"WORKDIR {workdir} (a system path; /app is used)")
        workdir = "/app"
    return SandboxRecipe(limits, workdir, tuple(writable)), skipped


def furnish_sandbox(task: HarborTask, sandbox: Sandbox, skipped: list[str]) -> Sandbox:
    """Put the task's ENV and COPYs into a sandbox made from its recipe; warn once about what is skipped."""
    skipped = list(skipped)
    sandbox.env.update(task.env)
    for host, dest in task.copies:
        target = dest
        if sandbox.mode != "namespaces":  # only the work dir exists: map the task's workdir onto it
            if dest == task.workdir or dest.startswith(task.workdir.rstrip("/") + "/"):
                target = os.path.join(sandbox.workdir, os.path.relpath(dest, task.workdir))
            else:
                skipped.append(f"COPY to {dest} (plain sandbox: only the work dir is writable)")
                continue
        try:
            sandbox.copy_in(host, target)
        except SandboxFileError as error:
            skipped.append(f"COPY to {dest} ({error})")
    if skipped:
        warnings.warn(
            f"task {task.name!r}: not applied in this sandbox: " + "; ".join(skipped),
            RuntimeWarning,
            stacklevel=3,
        )
    return sandbox


def _exports(env: tuple[tuple[str, str], ...]) -> str:
    return "".join(f"export {key}={shlex.quote(value)}; " for key, value in env)


def oracle_command(task: HarborTask, sandbox: Sandbox) -> str:
    """Place solution/ at /solution (only now: the agent never sees it) and the command that runs solve.sh."""
    paths = _paths(task, sandbox)
    if task.solution_dir:
        sandbox.copy_in(task.solution_dir, paths[SOLUTION_DIR])
    sandbox.write_file(os.path.join(paths[SOLUTION_DIR], "solve.sh"), _rewrite(task.solution, paths), 0o755)
    return f"{_exports(task.solution_env)}bash {shlex.quote(paths[SOLUTION_DIR])}/solve.sh"


def verify(task: HarborTask, sandbox: Sandbox) -> tuple[float, dict]:
    """Run the verifier after the agent: tests/ to /tests, test.sh, then the reward file. (reward, info)."""
    paths = _paths(task, sandbox)
    tests, logs = paths[TESTS_DIR], paths[LOGS_DIR]
    # Whatever the agent left in /tests or /logs/verifier (a planted conftest.py, a reward file) goes first.
    clear = sandbox.run(
        f"rm -rf {shlex.quote(tests)}/* {shlex.quote(tests)}/.[!.]* {shlex.quote(logs)}/verifier"
        f' && mkdir -p {shlex.quote(logs)}/verifier && [ -z "$(ls -A {shlex.quote(tests)})" ]'
    )
    if clear.exit_code != 0:
        return 0.0, {"verifier_error": f"could not clear {tests}: {clear.output}", "rewards": {}}
    if task.tests_dir:
        sandbox.copy_in(task.tests_dir, tests)
    if task.layout == "terminal-bench-1":
        sandbox.write_file(os.path.join(tests, "run-tests.sh"), _rewrite(task.tests, paths), 0o755)
    script = (
        task.test_script.replace("{logs}", shlex.quote(logs)) if task.layout != "harbor" else task.test_script
    )
    sandbox.write_file(os.path.join(tests, "test.sh"), _rewrite(script, paths), 0o755)
    # The verifier has its own time: its processes may use its whole timeout of CPU.
    sandbox.limits = dataclasses.replace(
        sandbox.limits, cpu_s=max(sandbox.limits.cpu_s, math.ceil(task.verifier_timeout_s))
    )
    env = (("TEST_DIR", tests), *task.verifier_env)
    result = sandbox.run(
        f"{_exports(env)}bash {shlex.quote(tests)}/test.sh", timeout_s=task.verifier_timeout_s
    )
    info = {
        "tests_output": result.output,
        "tests_exit_code": result.exit_code,
        "tests_timed_out": result.timed_out,
    }
    reward, rewards, error = read_reward(sandbox, f"{logs}/verifier")
    info.update(rewards=rewards, reward_source=error or "ok")
    if error:
        info["verifier_error"] = error
    return reward, info


def read_reward(sandbox: Sandbox, verifier_dir: str) -> tuple[float, dict, str]:
    """(reward, named rewards, error) from reward.txt (one float) or reward.json (named numbers: "reward"
    when present, else their mean). A missing or malformed file is reward 0 with the error saying why."""
    try:
        text = sandbox.read_file(f"{verifier_dir}/reward.txt", max_bytes=4096).decode(errors="replace")
    except SandboxFileError as txt_error:
        try:
            data = json.loads(sandbox.read_file(f"{verifier_dir}/reward.json", max_bytes=1 << 16))
        except SandboxFileError as json_error:
            return 0.0, {}, f"no reward file ({txt_error}; {json_error})"
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return 0.0, {}, f"reward.json is not JSON ({error})"
        if (
            not isinstance(data, dict)
            or not data
            or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in data.values()
            )
        ):
            return 0.0, {}, f"reward.json must map names to finite numbers, got {str(data)[:200]}"
        rewards = {str(k): float(v) for k, v in data.items()}
        return rewards.get("reward", sum(rewards.values()) / len(rewards)), rewards, ""
    try:
        value = float(text.strip())
    except ValueError:
        return 0.0, {}, f"reward.txt must hold one number, got {text.strip()[:100]!r}"
    if not math.isfinite(value):
        return 0.0, {}, f"reward.txt must hold a finite number, got {value}"
    return value, {"reward": value}, ""
