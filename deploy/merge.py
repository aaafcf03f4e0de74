"""Merge a LoRA adapter into its base model, shard by shard, and verify the result against PEFT.

Reads one base safetensors shard at a time, adds the LoRA deltas of the modules in it, writes it:
peak memory stays near one shard. Checks shapes before writing anything; refuses adapters it cannot
merge faithfully (DoRA, modules_to_save, bias, embedding LoRA) and quantized bases (an adapter
trained with QLoRA is merged into the unquantized 16/32-bit base).
"""
import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import torch
from safetensors import safe_open

from common import offline_defaults
from common.errors import InputError, cli
from common.io import atomic_path, check_output, read_json
from deploy.shards import Shard, model_shards

MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "tokenizer.model", "special_tokens_map.json", "chat_template.jinja", "added_tokens.json")
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def open_safetensors(path):
    """safetensors' own reader, for small files such as adapters."""
    Shard(path)  # validates the header and size first: a clear error for truncated files
    return safe_open(str(path), framework="pt")


def _pattern_value(patterns, name, default):
    for pattern, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?{pattern}$", name):
            return value
    return default


def load_adapter(adapter):
    """Return (config, {base weight name: (A, B, scaling)}) after checking it can be merged."""
    adapter = Path(adapter)
    cfg = read_json(adapter / "adapter_config.json")
    where = adapter / "adapter_config.json"
    if cfg.get("peft_type") != "LORA":
        raise InputError(f"only LoRA adapters can be merged, got {cfg.get('peft_type')}", where, field="peft_type")
    if cfg.get("use_dora"):
        raise InputError("DoRA adapters are not merged by this tool (their magnitude vector needs the "
                         "full-precision weight norm); use peft's merge_and_unload", where, field="use_dora")
    if cfg.get("modules_to_save"):
        raise InputError(f"modules_to_save {cfg['modules_to_save']} would replace whole modules; "
                         "retrain without it", where, field="modules_to_save")
    if cfg.get("bias", "none") != "none":
        raise InputError("LoRA bias terms are not supported; train with bias: none", where, field="bias")
    if cfg.get("fan_in_fan_out"):
        raise InputError("fan_in_fan_out (GPT-2 style Conv1D) is not supported", where, field="fan_in_fan_out")
    weights = adapter / ADAPTER_WEIGHTS
    if not weights.exists():
        if (adapter / "adapter_model.bin").exists():
            raise InputError("adapter_model.bin is a pickle; only safetensors adapters are merged", adapter)
        raise FileNotFoundError(f"{weights}: no such file")
    pairs = {}
    with open_safetensors(weights) as fh:
        for key in fh.keys():
            if "lora_embedding" in key or "lora_magnitude" in key:
                raise InputError(f"cannot merge tensor {key}", weights)
            match = re.match(r"base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight$", key)
            if not match:
                raise InputError(f"unexpected tensor {key}", weights)
            pairs.setdefault(match.group(1), {})[match.group(2)] = fh.get_tensor(key)
    merged = {}
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise InputError(f"{module} lacks lora_A or lora_B", weights)
        rank = ab["A"].shape[0]
        alpha = _pattern_value(cfg.get("alpha_pattern"), module, cfg.get("lora_alpha", rank))
        scaling = alpha / (rank ** 0.5 if cfg.get("use_rslora") else rank)
        merged[f"{module}.weight"] = (ab["A"], ab["B"], scaling)
    if not merged:
        raise InputError("adapter has no LoRA tensors", weights)
    return cfg, merged


def check_compatible(base, deltas):
    """Every adapted module exists in the base with matching shapes; nothing written yet."""
    config = read_json(Path(base) / "config.json")
    if config.get("quantization_config"):
        raise InputError("the base is quantized; merge into the unquantized 16/32-bit base model "
                         "(an adapter trained with QLoRA merges into the full-precision base)",
                         Path(base) / "config.json", field="quantization_config")
    found = {}
    for shard in model_shards(base):
        shard = Shard(shard)
        found.update({name: shard.shape(name) for name in shard.names() if name in deltas})
    missing = sorted(set(deltas) - set(found))
    if missing:
        raise InputError(f"the base has no weights for {len(missing)} adapted modules, e.g. {missing[0]}: "
                         "is this the adapter's base model?", base)
    for name, shape in found.items():
        a, b, _ = deltas[name]
        if [b.shape[0], a.shape[1]] != list(shape):
            raise InputError(f"{name}: adapter delta {b.shape[0]}x{a.shape[1]} does not match base "
                             f"weight {shape[0]}x{shape[1]}: is this the adapter's base model?", base)


def merge(base, adapter, output, force=False, verify="auto"):
    """Write the merged model to `output`; returns the verification report (or None)."""
    offline_defaults()
    base, adapter, output = Path(base), Path(adapter), Path(output)
    check_output(output, force)
    cfg, deltas = load_adapter(adapter)
    check_compatible(base, deltas)
    shards = model_shards(base)

    def add_delta(name, weight):
        if name not in deltas:
            return weight
        a, b, scaling = deltas[name]
        return (weight.float() + (b.float() @ a.float()) * scaling).to(weight.dtype)

    with atomic_path(output, force) as tmp:
        tmp.mkdir()
        for i, shard in enumerate(shards, 1):
            Shard(shard).rewrite(tmp / shard.name, add_delta)
            print(f"merge: shard {i}/{len(shards)} {shard.name}", file=sys.stderr)
        for name in MODEL_FILES + ("model.safetensors.index.json",):
            if (base / name).exists():
                shutil.copy2(base / name, tmp / name)
        (tmp / "merge_info.json").write_text(json.dumps({
            "base_model": str(base), "adapter": str(adapter),
            "adapter_base_model": cfg.get("base_model_name_or_path"),
            "modules_merged": len(deltas)}, indent=2))
        report = None
        size = sum(s.stat().st_size for s in shards)
        if verify is True or (verify == "auto" and size <= 2 * 1024**3):
            report = verify_merge(base, adapter, tmp)  # before the rename: a failure leaves nothing
        elif verify == "auto":
            print(f"merge: skipped the PEFT comparison ({size / 1e9:.1f} GB base; pass --verify)", file=sys.stderr)
    return report


def verify_merge(base, adapter, merged, atol=1e-3):
    """Compare merged-model logits with base + adapter (PEFT) on a probe batch."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base_model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    ids = torch.randint(0, base_model.config.vocab_size, (2, 16))
    with torch.no_grad():
        expected = PeftModel.from_pretrained(base_model, adapter).eval()(ids).logits
        del base_model
        got = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()(ids).logits
    diff = (expected - got).abs().max().item()
    report = {"max_abs_logit_diff": diff, "atol": atol, "argmax_agree": bool((expected.argmax(-1) == got.argmax(-1)).all())}
    if diff > atol * max(1.0, expected.abs().max().item()):
        raise RuntimeError(f"merged model differs from base+adapter: max |logit diff| {diff:.3g}")
    print(f"merge: verified against PEFT, max |logit diff| {diff:.2e}", file=sys.stderr)
    return report


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m deploy.merge", description=__doc__)
    parser.add_argument("--base", required=True, help="base model dir (safetensors)")
    parser.add_argument("--adapter", required=True, help="LoRA adapter dir (adapter_model.safetensors)")
    parser.add_argument("-o", "--output", required=True, help="merged model dir to write")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    check = parser.add_mutually_exclusive_group()
    check.add_argument("--verify", dest="verify", action="store_const", const=True, default="auto",
                       help="always compare with PEFT (default: when the base is <= 2 GB)")
    check.add_argument("--no-verify", dest="verify", action="store_const", const=False)
    args = parser.parse_args(argv)
    merge(args.base, args.adapter, args.output, args.force, args.verify)
    print(f"merged: {args.output}")


if __name__ == "__main__":
    main()
