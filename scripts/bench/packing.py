"""Benchmark: training data efficiency of an Axolotl recipe with sample packing vs the usual tutorial
way (plain transformers Trainer + PEFT, every example padded to 512), same data, model and LoRA.

Reports real (non-pad) tokens per second, the share of computed tokens that are padding, and time
per epoch (the trainer's own train_runtime, start-up excluded), side by side in one run.
On CPU Axolotl 0.19 keeps packed samples apart with sdpa (block-diagonal mask from position_ids;
tests/test_packing.py): packed samples stay apart, though each packed step holds several of them.
"""
import argparse
import json
import re
import sys
from pathlib import Path

from common import CACHE, ROOT, offline_defaults
from common.errors import cli
from common.io import atomic_open, check_output, read_jsonl, write_jsonl
from common.models import EMBEDDED, local_model
from scripts import cpu_run
from scripts.bench.measure import measure, python, table

DATASETS = {"qa": ROOT / "recipes/tinyllama-qa/data/train.messages.jsonl",
            "persona": ROOT / "recipes/tinyllama-discord-persona/data/train.messages.jsonl"}
RECIPE = ROOT / "recipes/quickstart/lora-135m.yml"
SEQ = 512
SCALES = (1, 5, 20, 100)
PADDED_TRAINER = """
import json, sys, torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments
model_dir, data, out, seq, r, alpha, lr, targets = sys.argv[1:9]
tok = AutoTokenizer.from_pretrained(model_dir)
rows = [json.loads(line)["messages"] for line in open(data)]
enc = tok([tok.apply_chat_template(m, tokenize=False) for m in rows], padding="max_length",
          max_length=int(seq), truncation=True, add_special_tokens=False)
enc["labels"] = [[t if a else -100 for t, a in zip(ids, mask)] for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
model = get_peft_model(model, LoraConfig(r=int(r), lora_alpha=int(alpha), task_type="CAUSAL_LM",
    target_modules=json.loads(targets)))
args = TrainingArguments(output_dir=out, per_device_train_batch_size=1, num_train_epochs=1, learning_rate=float(lr),
    logging_steps=1, save_strategy="no", report_to=[], optim="adamw_torch", use_cpu=True, disable_tqdm=True)
metrics = Trainer(model=model, args=args, train_dataset=Dataset.from_dict(dict(enc))).train().metrics
json.dump({"train_runtime": metrics["train_runtime"], "steps": len(rows),
           "real_tokens": sum(map(sum, enc["attention_mask"])), "computed_tokens": len(rows) * int(seq)}, open(out + "/result.json", "w"))
"""


def real_tokens(data):
    """Tokens of each conversation as the chat template renders it (what both runs train on)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(local_model(EMBEDDED))
    texts = [tok.apply_chat_template(r["messages"], tokenize=False) for _, r in read_jsonl(data)]
    return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]


def parse_axolotl_log(text):
    runtime = float(re.findall(r"'train_runtime': '?([0-9.]+)", text)[-1])
    steps = len(re.findall(r"\{'loss': ", text))
    return runtime, steps


def sample_set(data, work, times=1, limit=None):
    """The first `limit` conversations written `times` over: a larger set with the samples' exact
    length mix (packing efficiency depends on lengths only; the samples fill just 6 and 13 sequences)."""
    if times == 1 and limit is None:
        return data
    records = [r for _, r in read_jsonl(data)][:limit]
    out = work / f"{data.parent.parent.name}-{len(records)}x{times}.jsonl"
    write_jsonl(out, (r for _ in range(times) for r in records), force=True)
    return out


def packer_at_scale(lengths, repeats=SCALES, shuffles=3):
    """Axolotl's own multipack packer (first fit over the shuffled epoch order, as its sampler runs it)
    on the set's lengths repeated: how many sequences of SEQ it fills and its packing efficiency."""
    import numpy as np
    from axolotl.utils.samplers.multipack import pack_parallel

    rows = []
    for k in repeats:
        items = np.tile(np.minimum(lengths, SEQ), k)
        bins = [len(pack_parallel(items[np.random.default_rng(seed).permutation(len(items))], bin_capacity=SEQ,
                                  group_size=100_000, bin_size=SEQ, num_processes=1)) for seed in range(shuffles)]
        rows.append({"conversations": len(items), "fewest_possible": -(-int(items.sum()) // SEQ),
                     "axolotl_sequences": f"{min(bins)}-{max(bins)}",
                     "efficiency": f"{items.sum() / (SEQ * max(bins)):.1%}-{items.sum() / (SEQ * min(bins)):.1%}"})
    return rows


def run(names, work, times=1, limit=None):
    offline_defaults()
    rows, results = [], {}
    work.mkdir(parents=True, exist_ok=True)
    for name in names:
        data = sample_set(DATASETS[name], work, times, limit)
        lengths = real_tokens(data)
        real = sum(min(n, SEQ) for n in lengths)
        out = work / f"packed-{name}"
        cfg, _ = cpu_run.cpu_config(RECIPE, dataset=data, output_dir=out, validate=False)
        cfg.update(sample_packing=True, pad_to_sequence_len=True, sequence_len=SEQ, micro_batch_size=1,
                   gradient_accumulation_steps=1, num_epochs=1, logging_steps=1, save_strategy="no",
                   warmup_ratio=0.0, max_steps=None)
        cfg.pop("max_steps")
        out.mkdir(parents=True, exist_ok=True)
        config = cpu_run.write_config(cfg, out / "bench.yml")
        packed_timing = measure(python("-c", "import sys; from scripts.cpu_run import train; "
                                             "sys.exit(train(sys.argv[1], sys.argv[2]))", config, out / "train.log"))
        runtime, steps = parse_axolotl_log((out / "train.log").read_text())
        packed = {"seconds_per_epoch": runtime, "steps": steps, "computed_tokens": steps * SEQ,
                  "fewest_possible_steps": -(-real // SEQ),
                  "real_tokens": real, "peak_rss_mb": packed_timing["peak_rss_mb"]}
        padded_dir = work / f"padded-{name}"
        padded_dir.mkdir(parents=True, exist_ok=True)
        padded_timing = measure(python("-c", PADDED_TRAINER, local_model(EMBEDDED), data, padded_dir, SEQ,
                                       cfg["lora_r"], cfg["lora_alpha"], cfg["learning_rate"],
                                       json.dumps(cfg["lora_target_modules"])))
        p = json.loads((padded_dir / "result.json").read_text())
        padded = {"seconds_per_epoch": p["train_runtime"], "steps": p["steps"], "computed_tokens": p["computed_tokens"],
                  "real_tokens": p["real_tokens"], "peak_rss_mb": padded_timing["peak_rss_mb"]}
        for label, r in (("Axolotl recipe, sample packing", packed), ("Trainer + PEFT, pad to 512", padded)):
            r["real_tokens_per_s"] = round(r["real_tokens"] / r["seconds_per_epoch"], 1)
            r["padding_share"] = round(1 - r["real_tokens"] / r["computed_tokens"], 3)
            r["packing_efficiency"] = round(1 - r["padding_share"], 3)
            size = f"{len(lengths) // times} conversations" + (f" x {times}" if times > 1 else "")
            rows.append({"data": f"{name} ({size})", "run": label, **r})
        speedup = round(packed["real_tokens_per_s"] / padded["real_tokens_per_s"], 2)
        results[name] = {"conversations": len(lengths), "repeat": times, "packed": packed, "padded": padded,
                         "real_tokens_per_s_ratio": speedup,
                         # what perfect packing would give if a token costs the same either way
                         "ratio_ceiling": round(padded["computed_tokens"] / padded["real_tokens"], 2),
                         "targets_met": packed["packing_efficiency"] >= 0.95 and speedup >= 3,
                         "axolotl_packer_at_scale": packer_at_scale(lengths[:len(lengths) // times])}
    return rows, results


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.packing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--repeat", type=int, default=1, metavar="K",
                        help="train on each sample set written K times over (a larger set, same lengths)")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N conversations (a quick run)")
    parser.add_argument("--work", default=CACHE / "bench" / "packing", type=Path, help="runs go here")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --json output")
    args = parser.parse_args(argv)
    if args.repeat < 1 or (args.limit is not None and args.limit < 1):
        parser.error("--repeat and --limit must be at least 1")
    if args.json:
        check_output(args.json, args.force)
    rows, results = run(args.data, args.work, args.repeat, args.limit)
    print(table(rows, ["data", "run", "steps", "fewest_possible_steps", "real_tokens", "computed_tokens", "padding_share",
                       "seconds_per_epoch", "real_tokens_per_s", "peak_rss_mb"]))
    for name, r in results.items():
        print(f"{name}: real tokens/s packed / padded = {r['real_tokens_per_s_ratio']}x, packing efficiency "
              f"{r['packed']['packing_efficiency']:.1%} in {r['packed']['steps']} sequences of {SEQ} "
              f"(no packing can use fewer than {r['packed']['fewest_possible_steps']}), "
              f"targets (>=95%, >=3x) met: {r['targets_met']}; perfect packing would give {r['ratio_ceiling']}x")
    print("\nAxolotl's packer alone on each set's lengths, repeated (first fit in shuffled order; 3 shuffles):")
    print(table([{"data": name, **row} for name, r in results.items() for row in r["axolotl_packer_at_scale"]],
                ["data", "conversations", "fewest_possible", "axolotl_sequences", "efficiency"]))
    if args.json:
        with atomic_open(args.json, force=args.force) as fh:
            json.dump({"model": "SmolLM2-135M-Instruct, LoRA r16 all linear, CPU", "sequence_len": SEQ,
                       "results": results}, fh, indent=2)


if __name__ == "__main__":
    sys.exit(main())
