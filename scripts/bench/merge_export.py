"""Benchmark: our streaming merge vs PEFT merge_and_unload, and our GGUF export vs llama.cpp's
convert_hf_to_gguf.py, on a TinyLlama-1.1B-shaped random model saved in bf16 shards.

Each contender runs as its own subprocess on the same files in the same run; the table shows wall
time, peak RSS and the ratios, and whether the outputs agree.
"""
import argparse
import json
import sys
from pathlib import Path

from common import CACHE, offline_defaults
from common.errors import cli
from common.io import atomic_open, check_output
from common.models import TINYLLAMA, local_model
from deploy.vllm import LLAMA_LORA_MODULES
from scripts.bench.measure import measure, python, table

BENCH = CACHE / "bench"
TINYLLAMA_1B = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                    num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5)
PEFT_MERGE = """
import sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
base, adapter, out, shard = sys.argv[1:]
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
model.save_pretrained(out, max_shard_size=shard)
"""


def build(shard_size, layers, work=BENCH):
    """A TinyLlama-1.1B-shaped random bf16 model in shards, with a random LoRA adapter (cached)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    base = work / f"tinyllama-1.1b-random-{layers}l-{shard_size}"
    adapter = base.with_name(base.name + "-lora")
    if (base / "config.json").exists() and (adapter / "adapter_config.json").exists():
        return base, adapter
    print(f"bench: building {base} (once)", file=sys.stderr)
    torch.manual_seed(0)
    config = LlamaConfig(**{**TINYLLAMA_1B, "num_hidden_layers": layers}, tie_word_embeddings=False,
                         bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(base, max_shard_size=shard_size)
    AutoTokenizer.from_pretrained(local_model(TINYLLAMA)).save_pretrained(base)
    lora = LoraConfig(r=16, lora_alpha=32, init_lora_weights=False, task_type="CAUSAL_LM",
                      target_modules=list(LLAMA_LORA_MODULES))
    get_peft_model(model, lora).save_pretrained(adapter)
    return base, adapter


def compare_models(a, b):
    """Largest |difference| between two models' tensors of the same name."""
    from deploy.shards import Shard, model_shards

    theirs = {}
    for path in model_shards(b):
        shard = Shard(path)
        theirs.update({n: shard for n in shard.names()})
    worst = 0.0
    for path in model_shards(a):
        for name, tensor in Shard(path).tensors():
            other = theirs[name].read(name)
            worst = max(worst, (tensor.float() - other.float()).abs().max().item())
    return worst


def compare_gguf(a, b):
    """(tensors compared, names identical, max |difference|) between two GGUF files."""
    import gguf
    import numpy as np

    ta = {t.name: t for t in gguf.GGUFReader(a).tensors}
    tb = {t.name: t for t in gguf.GGUFReader(b).tensors}
    worst, identical = 0.0, True
    for name in ta.keys() & tb.keys():
        x, y = np.asarray(ta[name].data), np.asarray(tb[name].data)
        if ta[name].tensor_type != tb[name].tensor_type or x.shape != y.shape:
            return len(ta), False, float("inf")
        if not np.array_equal(x, y):
            identical = False
            worst = max(worst, float(np.abs(x.astype(np.float32) - y.astype(np.float32)).max()))
    return len(ta), identical and ta.keys() == tb.keys(), worst


def largest_file_mb(paths):
    return max(p.stat().st_size for p in paths) / 2**20


def run(shard_size="1GB", layers=22, work=BENCH):
    offline_defaults()
    base, adapter = build(shard_size, layers, work)
    work = work / "out"
    work.mkdir(parents=True, exist_ok=True)
    shards = sorted(base.glob("model-*.safetensors")) or [base / "model.safetensors"]
    shard_mb = largest_file_mb(shards)
    adapter_mb = (adapter / "adapter_model.safetensors").stat().st_size / 2**20
    print(f"bench: {len(shards)} shards, largest {shard_mb:.0f} MB, adapter {adapter_mb:.0f} MB", file=sys.stderr)

    ours = measure(python("-m", "deploy.merge", "--base", base, "--adapter", adapter, "-o", work / "merged-ours",
                          "--no-verify", "--force"))
    peft = measure(python("-c", PEFT_MERGE, base, adapter, work / "merged-peft", shard_size))
    merge_diff = compare_models(work / "merged-ours", work / "merged-peft")
    merge = {"ours": ours, "peft_merge_and_unload": peft, "largest_shard_mb": round(shard_mb, 1),
             "adapter_mb": round(adapter_mb, 1), "max_abs_weight_diff": merge_diff,
             "rss_vs_shard_plus_adapter": round(ours["peak_rss_mb"] / (shard_mb + adapter_mb), 2),
             "time_ratio_ours_over_peft": round(ours["seconds"] / peft["seconds"], 2),
             "rss_ratio_ours_over_peft": round(ours["peak_rss_mb"] / peft["peak_rss_mb"], 2)}

    merged = work / "merged-ours"
    converter = next(CACHE.glob("sdist/llama_cpp_python-*/vendor/llama.cpp/convert_hf_to_gguf.py"))
    ours_g = measure(python("-m", "deploy.gguf", merged, "-o", work / "ours-f16.gguf", "--outtype", "f16", "--force"))
    theirs_g = measure(python(converter, merged, "--outfile", work / "llamacpp-f16.gguf", "--outtype", "f16"),
                       env={"PYTHONPATH": str(converter.parent / "gguf-py")})
    count, identical, worst = compare_gguf(work / "ours-f16.gguf", work / "llamacpp-f16.gguf")
    largest_tensor_mb = TINYLLAMA_1B["vocab_size"] * TINYLLAMA_1B["hidden_size"] * 4 / 2**20
    export = {"ours": ours_g, "convert_hf_to_gguf": theirs_g, "tensors": count, "identical": identical,
              "max_abs_diff": worst, "largest_tensor_f32_mb": round(largest_tensor_mb, 1),
              "time_ratio_ours_over_llamacpp": round(ours_g["seconds"] / theirs_g["seconds"], 2),
              "rss_ratio_ours_over_llamacpp": round(ours_g["peak_rss_mb"] / theirs_g["peak_rss_mb"], 2)}
    return {"model": f"TinyLlama-1.1B-shaped random, {layers} layers, bf16, shards of {shard_size}",
            "merge": merge, "gguf_f16": export}


def show(result):
    m, g = result["merge"], result["gguf_f16"]
    rows = [
        {"task": "merge", "tool": "deploy.merge (ours)", **m["ours"]},
        {"task": "merge", "tool": "PEFT merge_and_unload", **m["peft_merge_and_unload"]},
        {"task": "GGUF f16", "tool": "deploy.gguf (ours)", **g["ours"]},
        {"task": "GGUF f16", "tool": "convert_hf_to_gguf.py", **g["convert_hf_to_gguf"]},
    ]
    print(result["model"])
    print(table(rows, ["task", "tool", "seconds", "peak_rss_mb"]))
    print(f"merge: time ours/PEFT {m['time_ratio_ours_over_peft']}, RSS ours/PEFT {m['rss_ratio_ours_over_peft']}, "
          f"peak RSS / (largest shard {m['largest_shard_mb']} MB + adapter {m['adapter_mb']} MB) = "
          f"{m['rss_vs_shard_plus_adapter']}, max |weight diff| vs PEFT {m['max_abs_weight_diff']:.3g}")
    print(f"GGUF: time ours/llama.cpp {g['time_ratio_ours_over_llamacpp']}, RSS ours/llama.cpp "
          f"{g['rss_ratio_ours_over_llamacpp']}, {g['tensors']} tensors identical: {g['identical']} "
          f"(max |diff| {g['max_abs_diff']})")


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.merge_export", description=__doc__)
    parser.add_argument("--shard-size", default="1GB")
    parser.add_argument("--layers", type=int, default=22, help="22 is TinyLlama-1.1B; fewer for a quick run")
    parser.add_argument("--work", type=Path, default=BENCH, help="models and outputs go here")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --json output")
    args = parser.parse_args(argv)
    if args.json:
        check_output(args.json, args.force)
    result = run(args.shard_size, args.layers, args.work)
    show(result)
    if args.json:
        with atomic_open(args.json, force=args.force) as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
