"""Terminal tasks (Terminal-Bench style): an instruction, a setup script, a test script, a solution.

Scripts are POSIX sh run inside the sandbox, in the task's working directory. The test script exits 0 iff
the task is solved; the solution is a scripted answer that must pass (tests/test_terminal.py runs all).
Setup scripts are deterministic, so an episode replays exactly from its seed and action prefix.
"""

from __future__ import annotations

import dataclasses
import json
import os


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    instruction: str
    setup: str
    tests: str
    solution: str
    network: bool = False  # touches the network: only run where the sandbox can cut it off
    max_turns: int = 20


TASKS: dict[str, Task] = {}


def add_task(task: Task) -> Task:
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} already exists")
    TASKS[task.name] = task
    return task


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


add_task(
    Task(
        "hello_file",
        "Create a file hello.txt containing exactly the line: Hello, world!",
        setup="",
        tests='[ "$(cat hello.txt)" = "Hello, world!" ]',
        solution="echo 'Hello, world!' > hello.txt",
    )
)
add_task(
    Task(
        "count_lines",
        "Write the number of lines of data.txt into count.txt (just the number).",
        setup="seq 1 37 | sed 's/^/row /' > data.txt",
        tests='[ "$(tr -d " \\n" < count.txt)" = "37" ]',
        solution="wc -l < data.txt | tr -d ' ' > count.txt",
    )
)
add_task(
    Task(
        "sort_unique",
        "names.txt has repeated names. Write the distinct names, sorted alphabetically, one per line, to unique.txt.",
        setup="printf 'mia\\nbob\\nzoe\\nbob\\nann\\nmia\\nbob\\n' > names.txt",
        tests='[ "$(cat unique.txt)" = "$(printf "ann\\nbob\\nmia\\nzoe")" ]',
        solution="sort -u names.txt > unique.txt",
    )
)
add_task(
    Task(
        "word_freq",
        "Write the most frequent word of text.txt (lowercase) into top.txt.",
        setup="printf 'the cat and the dog\\nA cat sat\\ncat food is for the cat\\n' > text.txt",
        tests='[ "$(tr -d " \\n" < top.txt)" = "cat" ]',
        solution="tr 'A-Z ' 'a-z\\n' < text.txt | grep -v '^$' | sort | uniq -c | sort -rn | head -1"
        " | awk '{print $2}' > top.txt",
    )
)
add_task(
    Task(
        "fix_python_add",
        "calc.py has a bug: add(a, b) does not return the sum. Fix it.",
        setup="printf 'def add(a, b):\\n    return a - b\\n\\n\\ndef mul(a, b):\\n    return a * b\\n' > calc.py",
        tests="python3 -c 'from calc import add, mul; assert add(2, 3) == 5 and add(-1, 1) == 0 and mul(3, 4) == 12'",
        solution="sed -i 's/return a - b/return a + b/' calc.py",
    )
)
add_task(
    Task(
        "fix_python_fib",
        "fib.py should define fib(n) with fib(0)=0, fib(1)=1, fib(10)=55, but it is off by one. Fix it.",
        setup="printf 'def fib(n):\\n    a, b = 0, 1\\n    for _ in range(n + 1):\\n        a, b = b, a + b\\n"
        "    return a\\n' > fib.py",
        tests="python3 -c 'from fib import fib; assert [fib(i) for i in (0, 1, 2, 10)] == [0, 1, 1, 55]'",
        solution="sed -i 's/range(n + 1)/range(n)/' fib.py",
    )
)
add_task(
    Task(
        "csv_sum",
        "sales.csv has a header and a column named amount. Write the sum of amount into total.txt.",
        setup="printf 'id,item,amount\\n1,pen,3\\n2,book,12\\n3,bag,25\\n4,ink,7\\n' > sales.csv",
        tests='[ "$(tr -d " \\n" < total.txt)" = "47" ]',
        solution="awk -F, 'NR > 1 {s += $3} END {print s}' sales.csv > total.txt",
    )
)
add_task(
    Task(
        "rename_ext",
        "Rename every .txt file in the docs directory to the same name with the .md extension.",
        setup='mkdir -p docs && for n in intro usage faq; do echo "# $n" > docs/$n.txt; done && echo keep > docs/notes.rst',
        tests='[ "$(ls docs | sort | tr "\\n" " ")" = "faq.md intro.md notes.rst usage.md " ]'
        ' && [ "$(cat docs/faq.md)" = "# faq" ]',
        solution='for f in docs/*.txt; do mv "$f" "${f%.txt}.md"; done',
    )
)
add_task(
    Task(
        "find_todo",
        "List, sorted, one per line, the paths (relative to src, like a/b.py) of files under src that contain"
        " TODO, into todo.txt.",
        setup="mkdir -p src/app src/lib && echo '# TODO: fix' > src/app/main.py && echo 'ok' > src/app/util.py"
        " && echo 'x = 1  # TODO' > src/lib/core.py && echo 'TODO later' > src/readme.txt",
        tests='[ "$(cat todo.txt)" = "$(printf "app/main.py\\nlib/core.py\\nreadme.txt")" ]',
        solution="cd src && grep -rl TODO . | sed 's|^./||' | sort > ../todo.txt",
    )
)
add_task(
    Task(
        "json_extract",
        "config.json describes a service. Write the value of database.port into port.txt.",
        setup='echo \'{"name": "svc", "database": {"host": "db", "port": 5433}, "port": 80}\' > config.json',
        tests='[ "$(tr -d " \\n" < port.txt)" = "5433" ]',
        solution='python3 -c \'import json; print(json.load(open("config.json"))["database"]["port"])\' > port.txt',
    )
)
add_task(
    Task(
        "replace_text",
        "In report.txt replace every occurrence of colour with color (keep everything else as is).",
        setup="printf 'The colour is red.\\nColour and colour again.\\nno change\\n' > report.txt",
        tests='[ "$(cat report.txt)" = "$(printf "The color is red.\\nColour and color again.\\nno change")" ]',
        solution="sed -i 's/colour/color/g' report.txt",
    )
)
add_task(
    Task(
        "make_script",
        "Create an executable shell script run.sh that prints ok.",
        setup="",
        tests='[ -x run.sh ] && [ "$(./run.sh)" = "ok" ]',
        solution="printf '#!/bin/sh\\necho ok\\n' > run.sh && chmod +x run.sh",
    )
)
add_task(
    Task(
        "dir_tree",
        "Create the directories a/b/c and a file a/b/c/leaf.txt containing leaf.",
        setup="",
        tests='[ -d a/b/c ] && [ "$(cat a/b/c/leaf.txt)" = "leaf" ]',
        solution="mkdir -p a/b/c && echo leaf > a/b/c/leaf.txt",
    )
)
add_task(
    Task(
        "log_errors",
        "server.log has lines with levels INFO, WARN and ERROR. Write the number of ERROR lines to errors.txt.",
        setup='for i in 1 2 3 4 5 6 7 8 9; do echo "2026-01-0$i INFO start $i"; done > server.log'
        " && printf '2026-01-10 ERROR disk\\n2026-01-11 WARN slow\\n2026-01-12 ERROR net\\n' >> server.log"
        " && echo '2026-01-13 INFO message says ERROR inside' >> server.log",
        tests='[ "$(tr -d " \\n" < errors.txt)" = "2" ]',
        solution="awk '$2 == \"ERROR\"' server.log | wc -l | tr -d ' ' > errors.txt",
    )
)
add_task(
    Task(
        "offline_check",
        "Write offline to status.txt if this machine cannot open a TCP connection to 1.1.1.1:53, else online.",
        setup="",
        tests='[ "$(tr -d " \\n" < status.txt)" = "offline" ]',
        solution="python3 -c 'import socket; s = socket.socket(); s.settimeout(2);"
        ' print("online" if s.connect_ex(("1.1.1.1", 53)) == 0 else "offline")\' > status.txt',
        network=True,  # only meaningful (and only safe to grade) where the sandbox cuts the network
    )
)
