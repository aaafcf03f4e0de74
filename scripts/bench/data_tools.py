"""Benchmark the data tools: records per second and peak memory (RSS) converting a generated
DiscordChatExporter export of N messages and N Alpaca records, as JSONL and as one JSON array (the
shape of Stanford's alpaca_data.json; streamed with ijson), side by side.

Each converter runs as a subprocess (python -m data_tools.discord / data_tools.alpaca) at N and at N/10;
peak RSS at both sizes side by side shows whether memory is constant. "The usual way" runs in the same
bench for comparison: a small inline converter that json.load()s the export (or reads all lines into a
list) and builds every output record before writing. Target: >= 50k records/s and constant memory
(peak RSS at N at most 1.25x the peak at N/10).

Inputs are generated once into --dir (default .cache/bench/, ignored by git) from the shipped samples
(recipes/tinyllama-discord-persona, recipes/tinyllama-alpaca) and reused; outputs are removed after
each run.

  python -m scripts.bench.data_tools [--n 1000000] [--json OUT] [--dir DIR] [--force]
"""
import argparse
import hashlib
import json
import os
import platform
import random
import resource
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from common import CACHE, ROOT
from common.errors import cli
from common.io import atomic_open, check_output
from scripts.bench.measure import measure, python, table

TARGET_RATE = 50_000  # records per second
TARGET_RSS_RATIO = 1.25  # peak RSS at N / peak RSS at N/10 that still counts as constant memory
PERSONA = "Vex"
DISCORD_SAMPLE = ROOT / "recipes" / "tinyllama-discord-persona" / "data" / "discord_export.json"
ALPACA_SAMPLE = ROOT / "recipes" / "tinyllama-alpaca" / "data" / "alpaca_train.jsonl"
GENERATOR_VERSION = 2  # part of the generated file names: bump when the generators change

# "the usual way": load everything, convert everything, then write everything
NAIVE_DISCORD = """
import json, sys
from datetime import timedelta
from data_tools import discord
from data_tools._chat import messages_record
src, dst, persona = sys.argv[1:4]
with open(src, encoding="utf-8-sig") as fh:
    data = json.load(fh)
raws = [discord.Raw(None, f"messages[{i}]", (m["author"].get("name"), m["author"].get("nickname"),
                    m["author"].get("id")), bool(m["author"].get("isBot")), m.get("type", "Default"),
                    m.get("timestamp"), m.get("content")) for i, m in enumerate(data["messages"])]
tally = discord.MessageTally()
records = [messages_record([(t.role, "\\n".join(t.texts)) for t in window], None, src)
           for conversation in discord.conversations(raws, src, persona, timedelta(minutes=30), tally, False)
           for window in discord.windows(conversation, 8, tally)]
with open(dst, "w", encoding="utf-8") as fh:
    fh.write("".join(json.dumps(r, ensure_ascii=False) + "\\n" for r in records))
print(f"kept {tally.kept}", file=sys.stderr)
"""
NAIVE_ALPACA = """
import json, sys
from data_tools import alpaca
src, dst = sys.argv[1:3]
with open(src, encoding="utf-8") as fh:
    lines = fh.readlines()
records = [json.loads(line) for line in lines if line.strip()]
out = [alpaca.to_messages(record, None, src, i) for i, record in enumerate(records, 1)]
with open(dst, "w", encoding="utf-8") as fh:
    fh.write("".join(json.dumps(r, ensure_ascii=False) + "\\n" for r in out))
"""


# --- generated inputs ---------------------------------------------------------------------------

def _templates(messages):
    """Each sample message rendered as DiscordChatExporter writes it (indent 2, inside "messages"),
    split around its id and timestamp: (before id, between, after timestamp)."""
    out = []
    for message in messages:
        message = {**message, "id": "@@ID@@", "timestamp": "@@TS@@"}
        text = "\n".join("    " + line for line in json.dumps(message, indent=2, ensure_ascii=False).splitlines())
        head, rest = text.split('"@@ID@@"')
        middle, tail = rest.split('"@@TS@@"')
        out.append((head + '"', '"' + middle + '"', '"' + tail))
    return out


def generate_discord(path, n, seed=0):
    """A DiscordChatExporter JSON export of n messages built from the shipped sample: the persona
    (Captain Vex, about a third of the messages), five other members, a bot and a few system messages;
    conversations of 4-60 messages, seconds to minutes apart, separated by gaps of 40 minutes to 12 hours."""
    sample = json.loads(DISCORD_SAMPLE.read_text(encoding="utf-8"))
    messages = sample.pop("messages")
    persona = _templates([m for m in messages if m["author"]["name"] == "Captain Vex" and m["type"] == "Default"])
    bot = _templates([m for m in messages if m["author"]["isBot"]])
    system = _templates([m for m in messages if m["type"] not in ("Default", "Reply")])
    members = _templates([m for m in messages if m["author"]["name"] != "Captain Vex"
                          and not m["author"]["isBot"] and m["type"] in ("Default", "Reply")])
    rng = random.Random(seed)
    when = datetime(2024, 3, 1, 18, 0, tzinfo=timezone.utc)
    snowflake = 1213184526545715214
    head = json.dumps(sample, indent=2, ensure_ascii=False)
    head = head[:head.rindex("}")].rstrip() + ',\n  "messages": [\n'
    with atomic_open(path, force=True) as fh:
        fh.write(head)
        written, left = [], 0
        for i in range(n):
            if left == 0:  # a new conversation after a long silence
                left = rng.randint(4, 60)
                when += timedelta(minutes=rng.uniform(40, 720))
            else:
                when += timedelta(seconds=rng.uniform(5, 240))
            left -= 1
            roll = rng.random()
            pool = (system if roll < 0.01 else bot if roll < 0.04 else persona if roll < 0.36 else members)
            before, between, after = rng.choice(pool)
            snowflake += rng.randint(1 << 22, 1 << 30)
            stamp = when.isoformat(timespec="milliseconds")
            written.append(f"{before}{snowflake}{between}{stamp}{after}{',' if i < n - 1 else ''}\n")
            if len(written) >= 10_000:
                fh.write("".join(written))
                written = []
        fh.write("".join(written))
        fh.write(f'  ],\n  "messageCount": {n}\n}}\n')
    return path


def generate_alpaca(path, n, seed=0, array=False):
    """n Alpaca records drawn from the shipped sample (with and without input), numbered to differ: JSONL,
    or with array=True the same records as one JSON array, one record per line as alpaca_data.json has them."""
    with open(ALPACA_SAMPLE, encoding="utf-8") as fh:
        pool = [json.loads(line) for line in fh if line.strip()]
    rng = random.Random(seed)
    with atomic_open(path, force=True) as fh:
        lines = []
        for i in range(n):
            record = dict(rng.choice(pool))
            record["instruction"] = f"{record['instruction']} (task {i})"
            text = json.dumps(record, ensure_ascii=False)
            lines.append((("[\n" if i == 0 else ",\n") + text) if array else text + "\n")
            if len(lines) >= 10_000:
                fh.write("".join(lines))
                lines = []
        fh.write("".join(lines) + ("\n]\n" if array else ""))
    return path


def _input(directory, kind, n):
    """The generated input for kind at size n, made once and reused."""
    suffix = "jsonl" if kind == "alpaca" else "json"
    path = Path(directory) / f"{kind}-v{GENERATOR_VERSION}-{n}.{suffix}"
    if not path.exists():
        start = time.perf_counter()
        if kind == "discord":
            generate_discord(path, n)
        else:
            generate_alpaca(path, n, array=kind == "alpaca-array")
        print(f"generated {path} ({path.stat().st_size / 2**20:,.0f} MiB) in {time.perf_counter() - start:.1f}s",
              file=sys.stderr)
    return path


# --- runs -----------------------------------------------------------------------------------------

def _commands(tool, src, dst):
    """tool name -> argv."""
    return {
        "data_tools.discord": python("-m", "data_tools.discord", src, "--persona", PERSONA, "-o", dst, "--force"),
        "naive discord (json.load)": python("-c", NAIVE_DISCORD, src, dst, PERSONA),
        "data_tools.alpaca": python("-m", "data_tools.alpaca", src, "-o", dst, "--force"),
        "data_tools.alpaca (JSON array)": python("-m", "data_tools.alpaca", src, "-o", dst, "--force"),
        "naive alpaca (readlines)": python("-c", NAIVE_ALPACA, src, dst),
    }[tool]


TOOLS = (("data_tools.discord", "discord"), ("naive discord (json.load)", "discord"),
         ("data_tools.alpaca", "alpaca"), ("data_tools.alpaca (JSON array)", "alpaca-array"),
         ("naive alpaca (readlines)", "alpaca"))


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _digest(path):
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            sha.update(chunk)
    return sha.hexdigest()


def run(n, directory):
    """Run every tool at n and n // 10; returns the result dict (rows plus machine)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sizes = (n, max(n // 10, 1))
    runs, digests = {}, {}
    with tempfile.TemporaryDirectory(prefix=".out-", dir=directory) as out:
        out = Path(out)
        for size in sizes:
            for tool, kind in TOOLS:
                src = _input(directory, kind, size)
                dst = out / f"{kind}.jsonl"
                cpu = _children_cpu()
                result = measure(_commands(tool, src, dst))
                result["cpu_seconds"] = round(_children_cpu() - cpu, 2)  # the one child measure() just reaped
                result.update(records=size, input_mb=round(src.stat().st_size / 2**20, 1),
                              output_mb=round(dst.stat().st_size / 2**20, 1))
                runs[tool, size] = result
                digests[tool, size] = _digest(dst)
                dst.unlink()
                print(f"{tool} n={size}: {result['seconds']}s, peak RSS {result['peak_rss_mb']} MB", file=sys.stderr)
    rows = []
    for tool, kind in TOOLS:
        big, small = runs[tool, sizes[0]], runs[tool, sizes[1]]
        rate = big["records"] / big["seconds"] if big["seconds"] else float("inf")
        ratio = big["peak_rss_mb"] / small["peak_rss_mb"]
        naive = tool.startswith("naive") or kind == "alpaca-array"  # compared with the JSONL run
        streamed = "data_tools.discord" if kind == "discord" else "data_tools.alpaca"
        rows.append({
            "tool": tool,
            "input": kind,
            "records": big["records"],
            "seconds": big["seconds"],
            "cpu_seconds": big["cpu_seconds"],
            "records_per_s": round(rate),
            "peak_rss_mb": big["peak_rss_mb"],
            "peak_rss_mb_n10": small["peak_rss_mb"],
            "records_n10": small["records"],
            "seconds_n10": small["seconds"],
            "rss_ratio": round(ratio, 2),
            "input_mb": big["input_mb"],
            "output_mb": big["output_mb"],
            "target_met": rate >= TARGET_RATE and ratio <= TARGET_RSS_RATIO,
            # the naive converter (and the array run) must write exactly what the streaming JSONL one writes
            "same_output_as_streaming": (digests[tool, sizes[0]] == digests[streamed, sizes[0]]) if naive else None,
        })
    return {"n": n, "n_small": sizes[1], "target_records_per_s": TARGET_RATE, "target_rss_ratio": TARGET_RSS_RATIO,
            "machine": machine(), "rows": rows}


def machine():
    mem_kib = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {"cpus": os.cpu_count(), "mem_gib": round(mem_kib / 2**20, 1), "python": platform.python_version(),
            "load_avg_1m": round(os.getloadavg()[0], 2), "platform": platform.platform()}


INPUTS = {"discord": "export (JSON)", "alpaca": "JSONL", "alpaca-array": "JSON array"}


def render(result):
    """The table printed at the end of a run."""
    rows = [{
        "tool": r["tool"],
        "input": INPUTS[r["input"]],
        "records": f"{r['records']:,}",
        "seconds": r["seconds"],
        "CPU s": r["cpu_seconds"],
        "records/s": f"{r['records_per_s']:,}",
        "peak RSS MB": r["peak_rss_mb"],
        "peak RSS MB at N/10": r["peak_rss_mb_n10"],
        "RSS ratio N vs N/10": f"{r['rss_ratio']:.2f}x",
        "target met": "yes" if r["target_met"] else "no",
    } for r in result["rows"]]
    m = result["machine"]
    note = (f"N = {result['n']:,}, N/10 = {result['n_small']:,}; machine: {m['cpus']} cores, {m['mem_gib']} GiB, "
            f"Python {m['python']}, load {m['load_avg_1m']} at the end; target: >= {TARGET_RATE:,} records/s and "
            f"peak RSS at N <= {TARGET_RSS_RATIO}x the peak at N/10")
    rate = {r["tool"]: r["records_per_s"] for r in result["rows"]}
    side = (f"alpaca records/s: JSONL {rate['data_tools.alpaca']:,} vs JSON array "
            f"{rate['data_tools.alpaca (JSON array)']:,}")
    return table(rows, list(rows[0])) + "\n" + side + "\n" + note


@cli
def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m scripts.bench.data_tools", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="messages / records at the large size (default 1M)")
    p.add_argument("--json", help="write the results here as JSON")
    p.add_argument("--dir", default=str(CACHE / "bench"), help="where generated inputs are kept (default .cache/bench)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --json output")
    args = p.parse_args(argv)
    if args.n < 10:
        p.error("--n must be at least 10")
    if args.json:
        check_output(args.json, args.force)
    result = run(args.n, args.dir)
    print(render(result))
    if args.json:
        with atomic_open(args.json, force=args.force) as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")


if __name__ == "__main__":
    main()
