"""A bounded load run against an OpenAI-compatible server (vLLM, llama-cpp-python's) on this machine.

N chat requests at a fixed concurrency, spread round-robin over the given model/adapter names, every
other one streamed; prints errors, p50/p95 latency and requests/s.

  python -m scripts.bench.vllm_load --base-url http://127.0.0.1:8000 --model base --model quickstart \
      [--requests 200] [--concurrency 16] [--max-tokens 16]
"""
import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from common.errors import cli


def one_request(client, model, prompt, max_tokens, stream):
    start = time.perf_counter()
    messages = [{"role": "user", "content": prompt}]
    if stream:
        text = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
            model=model, messages=messages, max_tokens=max_tokens, temperature=0.0, stream=True)
            if chunk.choices)
    else:
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                               temperature=0.0)
        text = reply.choices[0].message.content or ""
    return time.perf_counter() - start, text


def run_load(base_url, models, requests=200, concurrency=16, max_tokens=16, timeout=120):
    """models: names served at base_url, or (base_url, name) pairs to spread the requests over several
    servers. Returns {requests, errors, error_samples, p50_s, p95_s, requests_per_s, per_model}."""
    from openai import OpenAI

    targets = [m if isinstance(m, tuple) else (base_url, m) for m in models]
    clients = {url: OpenAI(base_url=url.rstrip("/") + "/v1", api_key="EMPTY", timeout=timeout, max_retries=0)
               for url in {url for url, _ in targets}}
    jobs = [(targets[i % len(targets)], f"Question {i}: what is {i % 7} plus {i % 5}?", i % 2 == 1)
            for i in range(requests)]

    def work(job):
        (url, model), prompt, stream = job
        try:
            latency, text = one_request(clients[url], model, prompt, max_tokens, stream)
            return model, latency, None if text else "empty reply"
        except Exception as err:  # noqa: BLE001 - every failure is counted and shown
            return model, None, f"{type(err).__name__}: {err}"

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(work, jobs))
    wall = time.perf_counter() - start
    latencies = sorted(lat for _, lat, err in results if err is None)
    errors = [err for _, _, err in results if err is not None]
    quantile = (lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]) if latencies else (
        lambda q: None)
    return {"requests": requests, "concurrency": concurrency, "errors": len(errors), "error_samples": errors[:3],
            "p50_s": quantile(0.50), "p95_s": quantile(0.95), "mean_s": statistics.fmean(latencies) if latencies else None,
            "requests_per_s": requests / wall, "wall_s": wall,
            "per_model": {m: sum(1 for model, _, err in results if model == m and err is None)
                          for _, m in targets}}


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.vllm_load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", action="append", required=True, help="model or adapter name, repeatable")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    stats = run_load(args.base_url, args.model, args.requests, args.concurrency, args.max_tokens)
    print(json.dumps(stats, indent=2))
    return 1 if stats["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
