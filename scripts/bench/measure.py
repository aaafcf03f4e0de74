"""Run a command as a subprocess and report its wall time and peak resident memory."""
import os
import subprocess
import sys
import tempfile
import time

from common import OFFLINE_ENV, ROOT


def measure(argv, env=None, cwd=ROOT, quiet=True):
    """Returns {"seconds", "peak_rss_mb", "rc"}; peak RSS from the child's rusage (Linux: KiB)."""
    full_env = {**os.environ, **OFFLINE_ENV, "TQDM_DISABLE": "1", **(env or {})}
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a chatty child cannot block on it
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=subprocess.DEVNULL if quiet else None,
                                stderr=err if quiet else None)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = rc = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        if rc != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(map(str, argv))} exited with {rc}\n{tail}")
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "rc": rc}


def python(*args):
    """argv running this venv's python."""
    return [sys.executable, *map(str, args)]


def table(rows, columns):
    """Plain-text table of dict rows."""
    cells = [[str(c) for c in columns]] + [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    width = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, width)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in width))
    return "\n".join(lines)


def _fmt(value):
    return f"{value:,.2f}" if isinstance(value, float) else str(value)
