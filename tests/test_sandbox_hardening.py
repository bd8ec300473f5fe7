"""The terminal sandbox against an adversarial agent: one test per route out, each ending as an observation.

Routes: writes outside the work dir, the host filesystem and other episodes, secrets and the parent's
environment and processes, the kernel surface (seccomp, no_new_privs, capabilities), the network, resource
exhaustion, processes that outlive the episode, files planted for the harness, and cleanup. A test that
needs a kernel feature skips only where `capabilities()` found the kernel refusing it, and says why.
"""

import dataclasses
import errno
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from alejax.envs.terminal import confine
from alejax.envs.terminal.sandbox import (
    Limits,
    Sandbox,
    SandboxError,
    SandboxFileError,
    capabilities,
    remove_tree,
)
from alejax.envs.terminal.shell import Shell

CAPS = capabilities()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = Limits(
    timeout_s=3.0,
    cpu_s=2,
    memory_bytes=256 << 20,
    file_size_bytes=1 << 20,
    nproc=32,
    disk_bytes=8 << 20,
    inodes=200,
    output_bytes=2048,
)
PLAIN = ("plain", False, CAPS["seccomp"])


def needs(feature: str, value=True):
    reason = CAPS["refused"].get("namespaces") or CAPS["refused"].get(feature.replace("_isolated", ""), "")
    return pytest.mark.skipif(CAPS[feature] != value, reason=f"{feature} is not available here: {reason}")


needs_namespaces = needs("filesystem_isolated")
needs_seccomp = needs("seccomp")
# Without namespaces and without root, commands run as our own uid: they can touch what we can.
OWN_UID = not CAPS["filesystem_isolated"] and os.geteuid() != 0
needs_another_uid = pytest.mark.skipif(
    OWN_UID, reason=f"plain mode as non-root runs as our own uid ({CAPS['refused'].get('namespaces')})"
)


@pytest.fixture
def box():
    with Sandbox(SMALL) as sandbox:
        yield sandbox


@pytest.fixture
def plain_box():
    with Sandbox(SMALL, _isolation=PLAIN) as sandbox:
        yield sandbox


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            return file.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


# ---- the filesystem ------------------------------------------------------------------------------------


@needs_namespaces
def test_only_the_allow_list_of_the_host_is_visible(box):
    top = set(box.run("ls -A /").output.split())
    assert top <= {
        "app",
        "bin",
        "dev",
        "etc",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "proc",
        "run",
        "sbin",
        "tmp",
        "usr",
        "var",
    }, top
    probe = (
        f"for p in /home /root /work /mnt /srv /opt /media {REPO} /etc/shadow /etc/ssh /etc/sudoers; do"
        " [ -e $p ] && echo VISIBLE $p; done; cat /etc/passwd"
    )
    result = box.run(probe)
    assert "VISIBLE" not in result.output, result.output
    host_users = {line.split(":")[0] for line in open("/etc/passwd")} - {"root", "nobody"}
    sandbox_users = {line.split(":")[0] for line in result.output.splitlines() if ":" in line}
    assert not host_users & sandbox_users and sandbox_users
    # the tools still work from the allow-list
    assert box.run("python3 -c 'print(6 * 7)'; echo a b | awk '{print $2}'").output.split() == ["42", "b"]


@needs_another_uid
def test_writes_outside_the_work_dir_fail_or_stay_private(box, tmp_path):
    host_file = tmp_path / "host.txt"
    host_file.write_text("original")
    home_marker = os.path.join(os.path.expanduser("~"), f".alejax-escape-{os.getpid()}")
    shm_name = f"/dev/shm/alejax-escape-{os.getpid()}"
    script = (
        f"echo x > ../escape-rel; echo x > {tmp_path}/new.txt; echo x > {host_file}; "
        f"ln -s {host_file} link && echo x >> link; ln /usr/bin/env hard 2>&1 | head -1; "
        f"echo x > {shm_name}; echo x > ~/.alejax-escape-{os.getpid()}; echo x > /usr/escape; "
        "echo x > /proc/sys/kernel/hostname; echo x > /proc/sysrq-trigger; echo inside > ok.txt"
    )
    if box.mode == "plain":
        script = script.replace("../escape-rel", "/escape-rel")  # plain: the work dir's parent is ours
    result = box.run(script)
    assert result.exit_code == 0 and box.read_file("ok.txt") == b"inside\n"
    assert host_file.read_text() == "original" and not (tmp_path / "new.txt").exists()
    assert not os.path.exists(home_marker) and not os.path.exists("/usr/escape")
    assert not os.path.exists(os.path.join(os.path.dirname(box.root), "escape-rel"))
    if box.mode == "namespaces":
        assert not os.path.exists(shm_name)  # /dev/shm is the sandbox's own
        assert result.output.count("Read-only file system") >= 2 and "Permission denied" in result.output
    assert open("/proc/sys/kernel/hostname").read().strip() != "x"


@needs_namespaces
def test_private_tmp_and_shm_even_when_the_sandbox_lives_under_tmp(tmp_path):
    with Sandbox(SMALL, base_dir=str(tmp_path)) as sandbox:  # the case that skipped the private /tmp before
        host_secret = tmp_path / "host-secret"
        host_secret.write_text("s3cret")
        name = f"alejax-probe-{os.getpid()}"  # a name the host's /tmp does not hold
        result = sandbox.run(
            f"ls -A /tmp /dev/shm; cat {host_secret}; echo mine > /tmp/{name}; echo mine > /dev/shm/{name}"
        )
        assert "s3cret" not in result.output and "No such file" in result.output
        assert sandbox.read_file(f"/tmp/{name}") == b"mine\n" == sandbox.read_file(f"/dev/shm/{name}")
        assert not os.path.exists(f"/tmp/{name}") and not os.path.exists(f"/dev/shm/{name}")


@pytest.mark.parametrize("mode", ["namespaces", "plain"])
def test_episodes_cannot_list_or_read_each_other(mode, tmp_path):
    if mode == "namespaces" and not CAPS["filesystem_isolated"]:
        pytest.skip(f"the kernel refuses namespaces here: {CAPS['refused'].get('namespaces')}")
    if mode == "plain" and os.geteuid() != 0:
        pytest.skip("plain mode as non-root: every episode runs as our own uid")
    isolation = None if mode == "namespaces" else PLAIN
    with Sandbox(SMALL, _isolation=isolation) as first, Sandbox(SMALL, _isolation=isolation) as second:
        first.run("echo the-answer-is-42 > secret.txt")
        base = os.path.dirname(first.root)
        target = first.root if mode == "namespaces" else first.workdir
        result = second.run(
            f"ls {base} {target} 2>/dev/null; cat {target}/secret.txt {first.workdir}/secret.txt"
            f" 2>/dev/null; echo listed=$(ls {base} 2>/dev/null | wc -l)"
        )
        assert "the-answer-is-42" not in result.output and "alejax-term" not in result.output
        assert "secret.txt" not in result.output and "listed=0" in result.output
        assert os.stat(base).st_mode & 0o777 == 0o711  # traversable, not listable
        assert os.stat(first.root).st_mode & 0o077 in (0, 0o011)  # no read for others
        if mode == "plain":
            assert (
                os.stat(first.workdir).st_mode & 0o777 == 0o700 and os.stat(first.workdir).st_uid == first.uid
            )


# ---- secrets, the parent's environment and processes ---------------------------------------------------


def test_the_parent_environment_and_secrets_do_not_leak(box, monkeypatch):
    monkeypatch.setenv("ALEJAX_TEST_SECRET", "tok-9f8e7d")
    processes = (
        "" if OWN_UID else "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; cat /proc/1/cmdline"
    )
    with Sandbox(SMALL, _isolation=(box.mode, box._userns, box._seccomp)) as sandbox:
        result = sandbox.run(f"env; {processes}")
    assert "tok-9f8e7d" not in result.output and "ALEJAX_TEST_SECRET" not in result.output
    names = {line.split("=", 1)[0] for line in result.output.splitlines() if "=" in line}
    assert {"PATH", "HOME", "TMPDIR"} <= names and not names & {"PYTHONPATH", "XLA_FLAGS", "VIRTUAL_ENV"}


@needs("pid_isolated")
def test_the_parent_processes_are_invisible_and_unkillable(box):
    me = os.getpid()
    result = box.run(f"ps -e -o pid=,comm=; kill -9 {me} 2>&1; echo rc=$?")
    listed = [line.split(None, 1)[1] for line in result.output.splitlines() if line.strip()[:1].isdigit()]
    assert sorted(listed) == ["ps", "sandbox-init", "sh"], listed  # our pid is not there
    assert "rc=0" not in result.output
    assert _alive(me)


# ---- the kernel surface --------------------------------------------------------------------------------


def _bpf(program: bytes, nr: int, arch: int, args=(0,) * 6) -> int:
    """Run a classic-BPF seccomp program on one syscall (the subset of BPF the builder emits)."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *args)
    code = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    pc = acc = 0
    while True:
        op, jt, jf, k = code[pc]
        if op == 0x20:
            acc, pc = struct.unpack_from("=I", data, k)[0], pc + 1
        elif op in (0x15, 0x45, 0x35):
            taken = acc == k if op == 0x15 else bool(acc & k) if op == 0x45 else acc >= k
            pc += 1 + (jt if taken else jf)
        else:
            assert op == 0x06, op
            return k


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_seccomp_program_refuses_what_it_should(machine):
    program = confine.seccomp_program(machine)
    arch, column = confine._ARCH[machine]
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    nr = {name: numbers[column] for name, numbers in confine._DENIED.items()}
    for name in (
        "unshare",
        "setns",
        "mount",
        "ptrace",
        "keyctl",
        "bpf",
        "perf_event_open",
        "io_uring_setup",
        "open_by_handle_at",
        "init_module",
        "pivot_root",
    ):
        assert _bpf(program, nr[name], arch) == eperm, name
    read, clone, ioctl = {"x86_64": (0, 56, 16), "aarch64": (63, 220, 29)}[machine]
    assert _bpf(program, read, arch) == allow
    assert _bpf(program, clone, arch, (signal.SIGCHLD, 0, 0, 0, 0, 0)) == allow  # fork, threads
    assert _bpf(program, clone, arch, (confine.CLONE_NEWUSER | signal.SIGCHLD, 0, 0, 0, 0, 0)) == eperm
    assert _bpf(program, clone, arch, (confine.CLONE_NEWNET, 0, 0, 0, 0, 0)) == eperm
    assert _bpf(program, 435, arch) == enosys  # clone3: libc falls back to clone
    assert _bpf(program, ioctl, arch, (0, confine.TIOCSTI, 0, 0, 0, 0)) == eperm
    assert _bpf(program, ioctl, arch, (0, 0x5401, 0, 0, 0, 0)) == allow  # TCGETS
    assert _bpf(program, read, 0x40000003) == 0x80000000  # another architecture: killed
    if machine == "x86_64":
        assert _bpf(program, 0x40000000 + read, arch) == eperm  # the x32 ABI
    assert confine.seccomp_program("sparc") is None


_SYSCALLS = r"""
import ctypes, os, errno, threading, subprocess
libc = ctypes.CDLL(None, use_errno=True); libc.syscall.restype = ctypes.c_long
def call(*args):
    r = libc.syscall(*[ctypes.c_long(a) for a in args])
    if r == 0 and args[0] == CLONE: os._exit(0)
    return 'ok' if r >= 0 else errno.errorcode[ctypes.get_errno()]
CLONE = NR['clone']
out = {'unshare_user': call(NR['unshare'], 0x10000000), 'unshare_net': call(NR['unshare'], 0x40000000),
       'clone_newuser': call(CLONE, 0x10000000 | 17, 0, 0, 0, 0), 'setns': call(NR['setns'], 0, 0),
       'mount': call(NR['mount'], 0, 0, 0, 0, 0), 'ptrace': call(NR['ptrace'], 0, 0, 0, 0),
       'keyctl': call(NR['keyctl'], 0, 0, 0, 0), 'bpf': call(NR['bpf'], 0, 0, 0),
       'perf_event_open': call(NR['perf_event_open'], 0, 0, -1, -1, 0), 'io_uring_setup': call(NR['io_uring_setup'], 1, 0),
       'clone3': call(435, 0, 0)}
t = threading.Thread(target=lambda: None); t.start(); t.join()
out['fork_and_threads'] = subprocess.run(['true']).returncode
print(out)
"""


@needs_seccomp
def test_seccomp_and_no_new_privs_refuse_namespaces_mounts_tracing(box):
    column = confine._ARCH[os.uname().machine][1]
    numbers = {name: n[column] for name, n in confine._DENIED.items() if n[column] is not None}
    numbers["clone"] = confine._CLONE[column]
    script = f"NR = {numbers!r}\n" + _SYSCALLS
    box.write_file("probe.py", script)
    result = box.run(
        "grep -E '^(NoNewPrivs|Seccomp|CapEff|CapBnd):' /proc/self/status; unshare -Ur true; "
        "echo unshare=$?; python3 probe.py"
    )
    status = dict(line.split(":\t") for line in result.output.splitlines() if ":\t" in line)
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
    assert int(status["CapEff"], 16) == 0
    if box._userns or os.geteuid() == 0:  # we had capabilities to drop: none may be regained by exec
        assert int(status["CapBnd"], 16) == 0
    assert "unshare=0" not in result.output
    out = eval(result.output.strip().splitlines()[-1])  # noqa: S307 - our own probe's dict
    assert out.pop("clone3") == "ENOSYS" and out.pop("fork_and_threads") == 0
    assert set(out.values()) == {"EPERM"}, out


def test_the_agent_is_not_root_on_the_host(box):
    uid = int(box.run("id -u").output)
    if box._userns:
        assert uid == 0  # uid 0 of its own user namespace, without capabilities (checked above)
    else:
        assert uid != 0 and uid == box.uid if os.geteuid() == 0 else uid == os.getuid()
    assert "Permission denied" in box.run("cat /proc/1/environ").output or box.mode == "plain"


# ---- the network ---------------------------------------------------------------------------------------


_NETWORK = r"""
import socket, sys
port, abstract = int(sys.argv[1]), sys.argv[2]
def attempt(name, fn):
    try:
        fn(); print(name, 'CONNECTED')
    except OSError as e:
        print(name, 'refused', type(e).__name__)
def tcp(host, p):
    s = socket.socket(); s.settimeout(1); s.connect((host, p))
attempt('host_loopback', lambda: tcp('127.0.0.1', port))
attempt('external', lambda: tcp('1.1.1.1', 53))
attempt('dns', lambda: socket.getaddrinfo('example.com', 80))
attempt('udp', lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('8.8.8.8', 53)))
attempt('raw', lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
attempt('packet', lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
attempt('abstract_unix', lambda: socket.socket(socket.AF_UNIX).connect('\0' + abstract))
server = socket.socket(); server.bind(('127.0.0.1', 0)); server.listen()
client = socket.create_connection(server.getsockname(), timeout=1); conn, _ = server.accept()
client.sendall(b'own'); print('own_loopback', conn.recv(3).decode())
"""


@needs("network_isolated")
def test_no_network_of_any_kind(box):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    abstract = f"alejax-test-{os.getpid()}"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind("\0" + abstract)
    unix.listen()
    accepted = []

    def accept():
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            try:
                accepted.append(server.accept())
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = server.getsockname()[1]
    box.write_file("net.py", _NETWORK)
    result = box.run(
        f"python3 net.py {port} {abstract}; bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}' 2>&1;"
        f" echo devtcp=$?",
        timeout_s=8,
    )
    server.close()
    unix.close()
    lines = dict(line.split(" ", 1) for line in result.output.splitlines() if " " in line)
    for route in ("host_loopback", "external", "dns", "udp", "raw", "packet", "abstract_unix"):
        assert lines[route].startswith("refused"), (route, result.output)
    assert lines["own_loopback"] == "own"  # a loopback of its own: local servers work inside
    assert "devtcp=0" not in result.output and not accepted


# ---- resource exhaustion -------------------------------------------------------------------------------


def test_fork_bomb_is_contained(box):
    start = time.monotonic()
    result = box.run("bash -c ':(){ :|:& };:'; sleep 30", timeout_s=2)
    assert (result.timed_out or result.exit_code != 0) and time.monotonic() - start < 6
    deadline = time.monotonic() + 5
    while box.processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert box.processes() == [] or box.mode == "plain" and box.uid is None
    assert box.run("echo alive").output.strip() == "alive"


def test_memory_limit(box):
    result = box.run("python3 -c 'x = bytearray(600 * 1024 * 1024); print(\"allocated\")'")
    assert "MemoryError" in result.output and "allocated" not in result.output


def test_file_size_limit(box):
    result = box.run("head -c 5000000 /dev/zero > big; wc -c < big")
    assert int(result.output.split()[-1]) <= 1 << 20


@needs("quota", "tmpfs")
def test_disk_bytes_quota_covers_work_dir_tmp_and_shm(box):
    result = box.run(
        "for d in . /tmp /dev/shm; do for i in 1 2 3 4 5 6 7 8 9; do"
        " head -c 1000000 /dev/zero > $d/f$i 2>/dev/null || { echo full at $d/f$i; break 2; }; done; done"
    )
    used, _ = box.disk_usage()
    assert "full at" in result.output and used <= SMALL.disk_bytes
    assert "disk quota reached" in result.note
    assert box.run("rm -f f* /tmp/f* /dev/shm/f*; echo x > small; cat small").output == "x\n"
    assert box.disk_usage()[0] < 1 << 20


@needs("quota", "tmpfs")
def test_inode_quota(box):
    result = box.run(
        'python3 -c \'\nimport os\nfor i in range(1000):\n    try: open(f"f{i}", "w").close()\n'
        '    except OSError as e: print("stopped at", i, e.strerror); break\''
    )
    stopped = int(result.output.split()[2])
    assert SMALL.inodes - 20 <= stopped <= SMALL.inodes and "No space left" in result.output
    assert box.disk_usage()[1] <= SMALL.inodes


def test_monitored_quota_stops_the_command_in_plain_mode(plain_box):
    result = plain_box.run(
        "i=0; while true; do i=$((i+1)); head -c 1000000 /dev/zero > f$i; sleep 0.01; done", timeout_s=10
    )
    assert result.limit == "disk quota" and not result.timed_out and "delete files" in result.note
    used, _ = plain_box.disk_usage()
    # Stopped within a poll (0.2 s): at most ~100 MB/s here (the sleep), so ~20 MB past the quota, where the
    # 10 s timeout would be ~1 GB. Without the sleep a fast disk writes more than that bound in one poll.
    assert used < SMALL.disk_bytes + (64 << 20)
    result = plain_box.run(
        'python3 -c \'\nfor i in range(100000): open(f"g{i}", "w").close()\'', timeout_s=10
    )
    assert result.limit == "disk quota"


def test_output_flood_and_binary_output(box):
    start = time.monotonic()
    flood = box.run("yes 'flood'")  # ends when the output file reaches the file size limit
    assert time.monotonic() - start < SMALL.timeout_s + 1
    assert "bytes omitted" in flood.output and len(flood.output) < SMALL.output_bytes + 200
    binary = box.run("head -c 3000 /dev/urandom; printf '\\000\\033[31m\\r\\n'")
    assert "\x00" not in binary.output and "\x1b" not in binary.output and "\\x00" in binary.output
    binary.output.encode("utf-8")  # valid text for a tokenizer / JSON


def test_endless_commands_are_killed():
    box = Sandbox(dataclasses.replace(SMALL, cpu_s=1))
    start = time.monotonic()
    assert box.run("sleep 60", timeout_s=1).timed_out
    loop = box.run("while true; do :; done", timeout_s=1)
    assert loop.timed_out or loop.exit_code in (-9, 128 + 9, 128 + 24)
    cpu = box.run("python3 -c 'while True: pass'", timeout_s=20)
    assert not cpu.timed_out and cpu.exit_code != 0  # SIGXCPU at cpu_s=1, well before 20 s
    assert time.monotonic() - start < 10
    box.close()


# ---- processes that outlive the episode ----------------------------------------------------------------


_DAEMONS = (
    "nohup sleep 300 >/dev/null 2>&1 & setsid sleep 301 & ( (sleep 302 &) & ); "
    "sh -c 'trap \"\" HUP TERM INT; sleep 303' & "
    "python3 -c 'import os, signal, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
    "        [signal.signal(s, signal.SIG_IGN) for s in (1, 2, 15)]\n        time.sleep(300)\n    os._exit(0)'; "
    "sleep 0.3; echo started"
)


@pytest.mark.parametrize("mode", ["namespaces", "plain"])
def test_nothing_outlives_the_episode(mode):
    if mode == "namespaces" and not CAPS["pid_isolated"]:
        pytest.skip(f"the kernel refuses pid namespaces here: {CAPS['refused'].get('pid')}")
    if mode == "plain" and os.geteuid() != 0:
        pytest.skip("plain mode as non-root: sandbox processes cannot be told from ours")
    sandbox = Sandbox(SMALL, _isolation=None if mode == "namespaces" else PLAIN)
    shell = Shell(sandbox)
    assert "started" in shell.run(_DAEMONS).output
    assert "started" in sandbox.run(_DAEMONS).output
    pids = sandbox.processes()
    assert len(pids) >= 4, pids  # daemons of both survived their commands (how many: timing) ...
    assert sandbox.close() is True
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if _alive(p)]  # ... but not the episode
    assert not os.path.exists(sandbox.root)
    shell.close()  # after the sandbox: still no error


# ---- files planted for the harness ---------------------------------------------------------------------


def test_planted_symlinks_fifos_and_huge_files_are_refused(box, tmp_path):
    host_secret = tmp_path / "secret"
    host_secret.write_text("host secret")
    target = tmp_path / "created-by-harness"
    box.run(
        f"ln -s {host_secret} reward.txt; ln -s /etc/passwd passwd; ln -s /proc/self/environ env; mkfifo fifo;"
        f" ln -s /dev/zero zero; head -c 900000 /dev/zero > big; mkdir d; ln -s / d/up; ln -s {target} out;"
        " echo 0.5 > real.txt; mkdir -p logs && ln -s /etc logs/verifier"
    )
    assert box.read_file("real.txt") == b"0.5\n" and box.read_file(f"{box.workdir}/real.txt") == b"0.5\n"
    for path in ("reward.txt", "passwd", "env", "zero", "d/up/etc/passwd", "logs/verifier/passwd"):
        with pytest.raises(SandboxFileError, match="symbolic|symlink"):
            box.read_file(path)
    with pytest.raises(SandboxFileError, match="not a regular file"):
        box.read_file("fifo")  # and does not block
    with pytest.raises(SandboxFileError, match="more than"):
        box.read_file("big", max_bytes=1000)
    for path in ("../x", "d/../../x", "/"):
        with pytest.raises(SandboxFileError):
            box.read_file(path)
    with pytest.raises(SandboxFileError):
        box.write_file("out", "harness data")  # through the agent's symlink: refused
    with pytest.raises(SandboxFileError):
        box.write_file("logs/verifier/reward.txt", "1")
    assert not target.exists() and host_secret.read_text() == "host secret"
    box.write_file("tests/test.sh", "echo ok\n", mode=0o755)
    assert box.run("./tests/test.sh").output == "ok\n"


@needs_namespaces
def test_harness_files_in_fixed_paths(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test.sh").write_text("cat /app/answer > /logs/verifier/reward.txt\n")
    with Sandbox(SMALL, workdir="/app", writable_dirs=("/logs/verifier", "/tests")) as sandbox:
        sandbox.run("echo 1 > /app/answer")
        sandbox.copy_in(str(tmp_path / "tests"), "/tests")
        assert sandbox.run("sh /tests/test.sh").exit_code == 0
        assert sandbox.read_file("/logs/verifier/reward.txt") == b"1\n"
        assert "Read-only" in sandbox.run("echo x > /logs/other").output
    with pytest.raises(SandboxError, match="cannot be a sandbox directory"):
        Sandbox(SMALL, writable_dirs=("/usr/local",))
    with pytest.raises(SandboxError, match="mount namespaces"):
        Sandbox(SMALL, workdir="/app", _isolation=PLAIN)


# ---- cleanup -------------------------------------------------------------------------------------------


def _deep_tree(top: str, depth: int) -> None:
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("dddd", dir_fd=fd)
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
        child = os.open("dddd", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)


def test_remove_tree_deep_unwritable_and_symlinked(tmp_path):
    # 2,500 levels: paths far past PATH_MAX, deeper than shutil.rmtree's recursion. On tmpfs when there is
    # one: a disk file system here takes milliseconds per mkdir/rmdir.
    deep = tempfile.mkdtemp(dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else str(tmp_path))
    _deep_tree(deep, 2500)
    start = time.monotonic()
    assert remove_tree(deep) is True and not os.path.exists(deep)
    assert time.monotonic() - start < 10
    top = tmp_path / "tree"
    top.mkdir()
    keep = tmp_path / "keep.txt"
    keep.write_text("keep")
    (top / "link").symlink_to(keep)
    (top / "dirlink").symlink_to(tmp_path)
    for mode in (0o000, 0o500, 0o100):
        locked = top / f"locked{mode:o}"
        locked.mkdir()
        (locked / "file\nwith newline").write_text("x")
        (locked / "sub").mkdir()
        locked.chmod(mode)
    assert remove_tree(str(top)) is True
    assert not top.exists() and keep.read_text() == "keep" and tmp_path.exists()
    assert remove_tree(str(top)) is True  # already gone
    file = tmp_path / "plain.txt"
    file.write_text("x")
    assert remove_tree(str(file)) is True and not file.exists()
    assert remove_tree("/proc/1") is False  # another file system's entries: refused, no exception


def test_close_never_raises_and_leaves_nothing(plain_box):
    plain_box.run(
        'python3 -c \'\nimport os\nfor i in range(400): os.mkdir("d"); os.chdir("d")\'; '
        "mkdir -p a/b && chmod 000 a/b a; ln -s / rootlink"
    )
    root = plain_box.root
    assert plain_box.close() is True and not os.path.exists(root)
    assert plain_box.close() is True  # twice is fine
    with pytest.raises(SandboxError, match="closed"):
        plain_box.run("true")


def test_a_dead_holder_is_an_observation_not_an_exception(box):
    if box.mode != "namespaces":
        pytest.skip(f"no holder without namespaces: {CAPS['refused'].get('namespaces')}")
    os.kill(box._holder_pid, signal.SIGKILL)
    box._holder.wait(5)
    result = box.run("echo hi")
    assert result.exit_code != 0 and "alejax-sandbox" in result.output
    assert box.close() is True and not os.path.exists(box.root)


# ---- what the machine refuses: degrade with a warning, never claim isolation ----------------------------


def test_refused_namespaces_degrade_to_plain_with_warnings():
    if not CAPS["seccomp"]:
        pytest.skip(f"the kernel refuses seccomp here: {CAPS['refused'].get('seccomp')}")

    def under_seccomp():  # a child where unshare and mount fail, as on a locked-down CI machine
        confine.prctl(confine.PR_SET_NO_NEW_PRIVS, 1)
        confine.install_seccomp()

    code = (
        "import json; from alejax.envs.terminal.sandbox import Sandbox, capabilities\n"
        "from alejax.envs.terminal.shell import Shell\n"
        "caps = capabilities(); box = Sandbox(); shell = Shell(box)\n"
        "shell.run('cd /; X=1'); print(json.dumps([caps, shell.run('echo $X $PWD').output, box.mode]))\n"
        "shell.close(); box.close()"
    )
    env = {k: v for k, v in os.environ.items() if k != "ALEJAX_SANDBOX_ISOLATION"}
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=under_seccomp,
        env=env,
    )
    caps, output, mode = json.loads(result.stdout.strip().splitlines()[-1])
    assert mode == "plain" and caps["mode"] == "plain" and output == "1 /\n"
    assert not caps["network_isolated"] and not caps["filesystem_isolated"] and caps["quota"] == "monitored"
    assert "Operation not permitted" in caps["refused"]["namespaces"]
    assert "namespaces refused here" in result.stderr and "network refused here" in result.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"),
    reason="needs root to run a child as an unprivileged user (non-root runs take this path anyway)",
)
def test_an_unprivileged_user_gets_the_same_isolation():
    # What a CI runner without root sees: a user namespace in place of the uid drop.
    script = (
        "import importlib.util, json, sys, types\n"
        "for name in ('alejax', 'alejax.envs', 'alejax.envs.terminal'): sys.modules[name] = types.ModuleType(name)\n"
        "def load(name, path):\n"
        "    spec = importlib.util.spec_from_file_location(name, path); module = importlib.util.module_from_spec(spec)\n"
        "    sys.modules[name] = module; spec.loader.exec_module(module); return module\n"
        f"sb = load('alejax.envs.terminal.sandbox', '{REPO}/alejax/envs/terminal/sandbox.py')\n"
        f"Shell = load('alejax.envs.terminal.shell', '{REPO}/alejax/envs/terminal/shell.py').Shell\n"
        "caps = sb.capabilities()\n"
        "with sb.Sandbox(sb.Limits(disk_bytes=1 << 20, inodes=50)) as box:\n"
        '    out = box.run(\'grep -E "^(CapEff|NoNewPrivs|Seccomp):" /proc/self/status; ls /root /work 2>&1;'
        " head -c 2000000 /dev/zero 2>&1 > f; unshare -U true 2>&1').output\n"
        "    shell = Shell(box); shell.run('cd /tmp; X=7'); kept = shell.run('echo $X $PWD').output\n"
        "    print(json.dumps([caps, out, kept, box.disk_usage()[0]]))\n"
        "    shell.close()\n"
    )

    def as_nobody():
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)

    result = subprocess.run(
        ["/usr/bin/python3", "-W", "always", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=as_nobody,
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    caps, out, kept, used = json.loads(result.stdout.strip().splitlines()[-1])
    if caps["mode"] != "namespaces":  # the kernel refuses unprivileged user namespaces: degrade, said so
        assert "namespaces" in caps["refused"] and "refused here" in result.stderr
        return
    assert caps["user_namespace"] and caps["filesystem_isolated"] and caps["seccomp"]
    assert "CapEff:\t0000000000000000" in out and "NoNewPrivs:\t1" in out and "Seccomp:\t2" in out
    assert out.count("No such file") == 2 and "No space left" in out and "Operation not permitted" in out
    assert kept == "7 /tmp\n" and used <= 1 << 20
