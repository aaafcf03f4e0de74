"""Token lengths of messages records (JSONL, a JSON array or Parquet), measured with the recipe's own tokenizer and chat template.

Each record is rendered with tokenizer.apply_chat_template (the template Axolotl would pick for the
recipe: chat_template / chat_template_jinja of the first dataset or of the config) and tokenized.
Printed: count, min/mean/p50/p95/max tokens, how many records exceed sequence_len (Axolotl drops or
truncates them), a packing estimate (first-fit decreasing into sequence_len bins: bins and efficiency
= tokens / (bins * sequence_len), over-long records counted as sequence_len), and role counts.
A base_model that is not a local directory is replaced by its local stand-in (common.models).

  python -m data_tools.stats DATA.jsonl --recipe recipes/quickstart/lora-135m.yml [--json OUT] [--png OUT]
  python -m data_tools.stats DATA.jsonl --tokenizer DIR --sequence-len N [--chat-template NAME]
"""
import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path

from common import ROOT, offline_defaults
from common.errors import InputError, cli
from common.io import Tally, atomic_open, atomic_path, check_output
from common.models import stand_in_for
from common.run import Run
from data_tools._chat import read_records, record_messages


def read_recipe(path):
    """(base_model, sequence_len, template config) from an Axolotl YAML."""
    run = Run.load(path, need_base_model=False)
    cfg = run.cfg
    for key in ("base_model", "sequence_len"):
        if cfg.get(key) is None:
            raise InputError("missing required field", run.path, None, key)
    for key in ("base_model", "tokenizer_config"):
        if cfg.get(key) is not None and not isinstance(cfg[key], str):
            raise run.error(key, f"expected a model id or path, got {type(cfg[key]).__name__}")
    datasets = cfg.get("datasets") or [{}]
    if not isinstance(datasets, list):
        raise run.error("datasets", f"expected a list of datasets, got {type(datasets).__name__}")
    return cfg.get("tokenizer_config") or cfg["base_model"], cfg["sequence_len"], run.chat_template


def resolve_model(name, recipe=None):
    """A local tokenizer directory for a path or hub id (hub ids map to their stand-in)."""
    for candidate in (Path(name), ROOT / str(name)):
        if candidate.is_dir():
            return candidate
    stand_in = stand_in_for(name)
    if stand_in is not None and stand_in.is_dir():
        return stand_in
    raise InputError(f"{name!r} is not a local model directory and has no built stand-in "
                     "(common.models.STAND_INS; run scripts/setup.sh)", recipe, None, "base_model")


def token_counter(model_dir, template, source=None):
    """A function messages -> number of tokens of the rendered chat."""
    offline_defaults()
    from axolotl.utils.chat_templates import get_chat_template
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    try:
        jinja = get_chat_template(template.get("chat_template") or "tokenizer_default",
                                  template.get("chat_template_jinja"), tokenizer)
    except ValueError as err:
        raise InputError(str(err), source, None, "chat_template") from None

    def count(messages):
        text = tokenizer.apply_chat_template(messages, chat_template=jinja, tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


def percentile(ordered, p):
    """Nearest-rank percentile of an ascending list."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def pack(lengths, capacity):
    """Number of bins first-fit decreasing needs for `lengths` (each capped at capacity)."""
    free = []
    for n in sorted((min(n, capacity) for n in lengths), reverse=True):
        for i, room in enumerate(free):
            if room >= n:
                free[i] -= n
                break
        else:
            free.append(capacity - n)
    return len(free)


def summarize(lengths, lines, roles, sequence_len):
    ordered = sorted(lengths)
    bins = pack(lengths, sequence_len)
    packed = sum(min(n, sequence_len) for n in lengths)
    over = [line for line, n in zip(lines, lengths) if n > sequence_len]
    return {
        "count": len(lengths),
        "sequence_len": sequence_len,
        "tokens": {"min": ordered[0], "mean": round(sum(lengths) / len(lengths), 2), "p50": percentile(ordered, 50),
                   "p95": percentile(ordered, 95), "max": ordered[-1], "total": sum(lengths)},
        "over_sequence_len": len(over),
        "over_sequence_len_lines": over,
        "packing": {"bins": bins, "efficiency": round(packed / (bins * sequence_len), 4)},
        "roles": dict(roles),
    }


def validate(data):
    """Read every record of data as measure() does; the first bad one raises InputError."""
    for number, record in read_records(data):
        record_messages(record, data, number)


def measure(data, count_tokens, sequence_len, skip_invalid=False, dropped=None):
    """Token length of every record in data -> summary dict."""
    lengths, lines, roles = [], [], Counter()
    for number, record in read_records(data, dropped if skip_invalid else None):
        try:
            messages = record_messages(record, data, number)
        except InputError as err:
            if not skip_invalid:
                raise
            dropped.drop(err.reason)
            continue
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
        roles.update(m["role"] for m in messages)
        lengths.append(count_tokens(messages))
        lines.append(number)
    if not lengths:
        raise InputError("no valid records", data)
    return summarize(lengths, lines, roles, sequence_len), lengths


def plot(lengths, sequence_len, path, title, force=False):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(lengths, bins=min(50, max(5, len(set(lengths)))), color="#4C72B0")
    ax.axvline(sequence_len, color="#C44E52", linestyle="--", label=f"sequence_len = {sequence_len}")
    ax.set(xlabel="tokens per record", ylabel="records", title=title)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, force) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def report(summary, stream=None):
    stream = stream or sys.stdout
    t, p = summary["tokens"], summary["packing"]
    print(f"{summary['count']} records; tokens min {t['min']} / mean {t['mean']} / p50 {t['p50']} / "
          f"p95 {t['p95']} / max {t['max']} (total {t['total']})", file=stream)
    print(f"over sequence_len {summary['sequence_len']}: {summary['over_sequence_len']} "
          f"(would be cut) {summary['over_sequence_len_lines'][:10] or ''}", file=stream)
    print(f"packing (first-fit decreasing): {p['bins']} bins of {summary['sequence_len']}, "
          f"efficiency {p['efficiency']:.1%}", file=stream)
    print("roles: " + ", ".join(f"{role} {n}" for role, n in sorted(summary["roles"].items())), file=stream)


@cli
def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m data_tools.stats", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="messages records: JSONL, a JSON array or Parquet")
    p.add_argument("--recipe", help="Axolotl YAML: base_model, sequence_len and chat_template come from it")
    p.add_argument("--tokenizer", help="tokenizer directory (instead of --recipe)")
    p.add_argument("--sequence-len", type=int, help="with --tokenizer (or to override the recipe's)")
    p.add_argument("--chat-template",
                   help="with --tokenizer: an Axolotl chat_template name (default: the tokenizer's)")
    p.add_argument("--json", help="write the summary as JSON here")
    p.add_argument("--png", help="write a token-length histogram here")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--skip-invalid", action="store_true", help="count invalid records as dropped instead of stopping")
    args = p.parse_args(argv)
    if bool(args.recipe) == bool(args.tokenizer):
        p.error("pass either --recipe or --tokenizer")
    if args.tokenizer and not args.sequence_len:
        p.error("--tokenizer needs --sequence-len")
    for out in (args.json, args.png):
        if out:
            check_output(out, args.force)
    if args.recipe:
        model, sequence_len, template = read_recipe(args.recipe)
        model_dir = resolve_model(model, args.recipe)
    else:
        model_dir, sequence_len = resolve_model(args.tokenizer), None
        template = {"chat_template": args.chat_template}
    sequence_len = args.sequence_len or sequence_len
    if not isinstance(sequence_len, int) or sequence_len <= 0:
        raise InputError(f"expected a positive integer, got {sequence_len!r}", args.recipe, None, "sequence_len")
    if not args.skip_invalid:
        validate(args.data)  # a bad record stops the run before the tokenizer loads (seconds)
    count_tokens = token_counter(model_dir, template, args.recipe)
    dropped = Tally()
    summary, lengths = measure(args.data, count_tokens, sequence_len, args.skip_invalid, dropped)
    summary.update(file=str(args.data), tokenizer=str(model_dir), chat_template=template.get("chat_template"))
    report(summary)
    if dropped.dropped:
        dropped.kept = summary["count"]
        dropped.report(f"stats {args.data}", sys.stderr)
    if args.json:
        with atomic_open(args.json, args.force) as fh:
            json.dump(summary, fh, indent=2)
            fh.write("\n")
    if args.png:
        plot(lengths, sequence_len, args.png, f"{Path(args.data).name} ({Path(model_dir).name})", args.force)


if __name__ == "__main__":
    main()
