"""Run a command as a subprocess and report its wall time and peak resident memory.

Linux carries a process's memory high-water mark across exec, so a child forked straight from a big
benchmark process would inherit its peak; a tiny launcher process runs the command instead.
"""
import json
import os
import subprocess
import sys
import tempfile

from common import OFFLINE_ENV, ROOT

LAUNCHER = """
import json, os, subprocess, sys, time
report, argv = sys.argv[1], sys.argv[2:]
err = open(report + ".err", "wb")
start = time.perf_counter()
proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL if os.environ.get("BENCH_QUIET") else None, stderr=err)
_, status, usage = os.wait4(proc.pid, 0)
json.dump({"seconds": round(time.perf_counter() - start, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
           "rc": os.waitstatus_to_exitcode(status)}, open(report, "w"))
"""


def measure(argv, env=None, cwd=ROOT, quiet=True):
    """Returns {"seconds", "peak_rss_mb", "rc"} of argv; raises with its stderr tail if it fails."""
    full_env = {**os.environ, **OFFLINE_ENV, "TQDM_DISABLE": "1", **(env or {})}
    if quiet:
        full_env["BENCH_QUIET"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        subprocess.run([sys.executable, "-S", "-c", LAUNCHER, report, *map(str, argv)], cwd=cwd,
                       env=full_env, check=True)
        with open(report) as fh:
            result = json.load(fh)
        if result["rc"] != 0:
            with open(report + ".err", "rb") as fh:
                tail = fh.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(map(str, argv))} exited with {result['rc']}\n{tail}")
    return result


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
