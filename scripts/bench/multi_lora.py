"""One vLLM server with N LoRA adapters vs one server per merged model, side by side in one run.

Both setups serve the same N fine-tunes of the embedded SmolLM2-135M-Instruct on 127.0.0.1 and get the
same requests (round-robin over the N, every other one streamed). Reported per setup: the memory of
every process it started (PSS, so pages shared between a server's processes count once), requests/s
and p50/p95 latency; for the multi-LoRA server also the time to load one more adapter at runtime.
The merged models are written by deploy.merge into --work.

  python -m scripts.bench.multi_lora --adapter qa=DIR --adapter rpg=DIR ... [--requests 200]
      [--concurrency 16] [--work .cache/bench/multi_lora] [--json FILE --force]
"""
import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

from common import ROOT, offline_defaults
from common.errors import cli
from common.io import atomic_open, check_output
from common.models import EMBEDDED, local_model
from deploy import vllm
from deploy.vllm_server import Server, descendants, free_port
from scripts.bench.vllm_load import run_load


def tree_pss_mb(pid):
    """Proportional set size of pid and every process below it, in MB."""
    total = 0
    for each in descendants(pid) | {pid}:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total / 1024


def start(argv, log, port, runtime_lora=False):
    server = Server(argv, log, port=port, timeout=300, runtime_lora=runtime_lora)
    server.start()
    return server


def multi_lora(base, adapters, work, requests, concurrency, max_tokens):
    port = free_port()
    specs = [f"{name}={path}" for name, path in adapters.items()]
    argv, _, _ = vllm.serve_argv(str(base), specs, port=port, served_model_name="base",
                                 extra=["--max-model-len", "1024"])
    server = start(argv, work / "multi-lora.log", port, runtime_lora=True)
    try:
        memory = tree_pss_mb(server.proc.pid)
        load = run_load(server.base_url, list(adapters), requests, concurrency, max_tokens)
        first = next(iter(adapters.values()))
        began = time.perf_counter()
        status, body = vllm.load_adapter(server.base_url, "one-more", first)
        loaded = time.perf_counter() - began
        if status != 200:
            raise RuntimeError(f"runtime load failed: {body}")
        return {"servers": 1, "pss_mb": memory, "runtime_load_s": loaded, **load}
    finally:
        server.stop()


def merged_servers(base, adapters, work, requests, concurrency, max_tokens):
    from deploy.merge import merge

    with contextlib.ExitStack() as stack:
        targets = []
        for name, adapter in adapters.items():
            merged = work / f"merged-{name}"
            if not (merged / "config.json").exists():
                merge(base, adapter, merged, verify=False)
            port = free_port()
            argv, _, _ = vllm.serve_argv(merged=str(merged), port=port, served_model_name=name,
                                         extra=["--max-model-len", "1024"])
            server = start(argv, work / f"merged-{name}.log", port)
            stack.callback(server.stop)
            targets.append((server, name))
        memory = sum(tree_pss_mb(server.proc.pid) for server, _ in targets)
        load = run_load(None, [(server.base_url, name) for server, name in targets], requests, concurrency,
                        max_tokens)
        return {"servers": len(targets), "pss_mb": memory, **load}


def run(adapters, work, requests=200, concurrency=16, max_tokens=16):
    offline_defaults()
    work.mkdir(parents=True, exist_ok=True)
    base = local_model(EMBEDDED)
    one = multi_lora(base, adapters, work, requests, concurrency, max_tokens)
    many = merged_servers(base, adapters, work, requests, concurrency, max_tokens)
    return {"adapters": len(adapters), "requests": requests, "concurrency": concurrency, "max_tokens": max_tokens,
            "multi_lora": one, "merged": many,
            "ratios": {"memory": one["pss_mb"] / many["pss_mb"],
                       "requests_per_s": one["requests_per_s"] / many["requests_per_s"]}}


def table(result):
    one, many = result["multi_lora"], result["merged"]
    rows = [("", f"1 server, {result['adapters']} adapters", f"{many['servers']} merged servers", "ratio"),
            ("memory (PSS, MB)", f"{one['pss_mb']:.0f}", f"{many['pss_mb']:.0f}", f"{result['ratios']['memory']:.2f}x"),
            ("requests/s", f"{one['requests_per_s']:.2f}", f"{many['requests_per_s']:.2f}",
             f"{result['ratios']['requests_per_s']:.2f}x"),
            ("p50 / p95 latency (s)", f"{one['p50_s']:.2f} / {one['p95_s']:.2f}",
             f"{many['p50_s']:.2f} / {many['p95_s']:.2f}", ""),
            ("errors", str(one["errors"]), str(many["errors"]), ""),
            ("runtime adapter load (s)", f"{one['runtime_load_s']:.2f}", "-", "")]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows[:1] + [("---",) * 4] + rows[1:])


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.multi_lora", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--work", default=str(ROOT / ".cache" / "bench" / "multi_lora"))
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--force", action="store_true", help="replace an existing --json file")
    args = parser.parse_args(argv)
    if args.json:
        check_output(args.json, args.force)
    adapters = dict(vllm.parse_adapter_spec(spec) for spec in args.adapter)
    result = run(adapters, Path(args.work), args.requests, args.concurrency, args.max_tokens)
    print(table(result))
    if args.json:
        with atomic_open(args.json, force=args.force) as fh:
            json.dump(result, fh, indent=2)
    return 1 if result["multi_lora"]["errors"] or result["merged"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
