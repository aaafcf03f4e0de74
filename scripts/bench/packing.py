"""Benchmark: training data efficiency of an Axolotl recipe with sample packing vs the usual tutorial
way (plain transformers Trainer + PEFT, every example padded to 512), same data, model and LoRA.

Reports real (non-pad) tokens per second, the share of computed tokens that are padding, and time
per epoch (the trainer's own train_runtime, start-up excluded), side by side in one run.
On CPU there is no attention backend that keeps packed samples apart, so packed samples attend to
each other here: the figures measure throughput, not learning; GPU recipes pack with flash attention.
"""
import argparse
import json
import re
import sys

from common import CACHE, ROOT, offline_defaults
from common.io import atomic_open, read_jsonl
from common.models import EMBEDDED, local_model
from scripts import cpu_run
from scripts.bench.measure import measure, python, table

DATASETS = {"qa": ROOT / "recipes/tinyllama-qa/data/train.messages.jsonl",
            "persona": ROOT / "recipes/tinyllama-discord-persona/data/train.messages.jsonl"}
RECIPE = ROOT / "recipes/quickstart/lora-135m.yml"
SEQ = 512
PADDED_TRAINER = """
import json, sys, torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments
model_dir, data, out, seq, r, alpha, lr = sys.argv[1:8]
tok = AutoTokenizer.from_pretrained(model_dir)
rows = [json.loads(line)["messages"] for line in open(data)]
enc = tok([tok.apply_chat_template(m, tokenize=False) for m in rows], padding="max_length",
          max_length=int(seq), truncation=True, add_special_tokens=False)
enc["labels"] = [[t if a else -100 for t, a in zip(ids, mask)] for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
model = get_peft_model(model, LoraConfig(r=int(r), lora_alpha=int(alpha), task_type="CAUSAL_LM",
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
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


def run(names, work):
    offline_defaults()
    rows, results = [], {}
    for name in names:
        data = DATASETS[name]
        lengths = real_tokens(data)
        real = sum(min(n, SEQ) for n in lengths)
        out = work / f"packed-{name}"
        cfg, _ = cpu_run.cpu_config(RECIPE, dataset=data, output_dir=out)
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
                                       cfg["lora_r"], cfg["lora_alpha"], cfg["learning_rate"]))
        p = json.loads((padded_dir / "result.json").read_text())
        padded = {"seconds_per_epoch": p["train_runtime"], "steps": p["steps"], "computed_tokens": p["computed_tokens"],
                  "real_tokens": p["real_tokens"], "peak_rss_mb": padded_timing["peak_rss_mb"]}
        for label, r in (("Axolotl recipe, sample packing", packed), ("Trainer + PEFT, pad to 512", padded)):
            r["real_tokens_per_s"] = round(r["real_tokens"] / r["seconds_per_epoch"], 1)
            r["padding_share"] = round(1 - r["real_tokens"] / r["computed_tokens"], 3)
            r["packing_efficiency"] = round(1 - r["padding_share"], 3)
            rows.append({"data": f"{name} ({len(lengths)} conversations)", "run": label, **r})
        speedup = round(packed["real_tokens_per_s"] / padded["real_tokens_per_s"], 2)
        results[name] = {"packed": packed, "padded": padded, "real_tokens_per_s_ratio": speedup,
                         "targets_met": packed["packing_efficiency"] >= 0.95 and speedup >= 3}
    return rows, results


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.packing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    rows, results = run(args.data, CACHE / "bench" / "packing")
    print(table(rows, ["data", "run", "steps", "fewest_possible_steps", "real_tokens", "computed_tokens", "padding_share",
                       "seconds_per_epoch", "real_tokens_per_s", "peak_rss_mb"]))
    for name, r in results.items():
        print(f"{name}: real tokens/s packed / padded = {r['real_tokens_per_s_ratio']}x, packing efficiency "
              f"{r['packed']['packing_efficiency']:.1%} in {r['packed']['steps']} sequences of {SEQ} "
              f"(no packing can use fewer than {r['packed']['fewest_possible_steps']}), "
              f"targets (>=95%, >=3x) met: {r['targets_met']}")
    if args.json:
        with atomic_open(args.json, force=True) as fh:
            json.dump({"model": "SmolLM2-135M-Instruct, LoRA r16 all linear, CPU", "sequence_len": SEQ,
                       "results": results}, fh, indent=2)


if __name__ == "__main__":
    sys.exit(main())
