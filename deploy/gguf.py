"""Export a merged HF model (or a Llama-family LoRA adapter) to GGUF.

Llama family (TinyLlama, Llama 3.x, SmolLM2): written here with the `gguf` package, one tensor in memory
at a time, byte-identical to llama.cpp's convert_hf_to_gguf.py. Tokenizers: SentencePiece (TinyLlama,
from tokenizer.model or an SPM-style tokenizer.json), Llama-3 BPE and SmolLM2 BPE; anything else gets a
clear error instead of a broken file. Every other architecture (Qwen2, Phi-3, ...) goes through
llama.cpp's own convert_hf_to_gguf.py from the llama-cpp-python sources set-up downloads.
F32, F16, BF16 and Q8_0 are written directly; k-quants (Q4_K_M, ...) are made from the F16 file by
llama.cpp's own quantizer as exposed by llama-cpp-python.
"""
import argparse
import glob
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import torch

from common import CACHE
from common.errors import InputError, cli
from common.io import atomic_path, check_output
from common.io import read_json
from deploy.merge import check_compatible, load_adapter
from deploy.shards import Shard, model_shards

ARCHITECTURES = ("LlamaForCausalLM",)
FTYPES = {  # name -> (GGML type for 2-D weights, llama file type)
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
K_QUANTS = ("q4_k_m", "q4_k_s", "q5_k_m", "q5_k_s", "q6_k", "q3_k_m", "q2_k", "q4_0")
LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
NUMPY = {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.F16: np.float16}


# --- model and tokenizer metadata ---

def architecture(config):
    return (config.get("architectures") or ["?"])[0]


def is_llama(config):
    """Whether this module writes the model itself (else llama.cpp's convert_hf_to_gguf.py does)."""
    return architecture(config) in ARCHITECTURES and config.get("model_type") == "llama"


def model_config(model_dir, llama_only=True):
    config = read_json(Path(model_dir) / "config.json")
    if llama_only and not is_llama(config):
        raise InputError(f"architecture {architecture(config)} is not supported (Llama family only)",
                         Path(model_dir) / "config.json", field="architectures")
    if config.get("quantization_config"):
        raise InputError("quantized HF weights cannot be exported; export the merged 16/32-bit model",
                         Path(model_dir) / "config.json", field="quantization_config")
    return config


def bpe_pre_tokenizer(tokenizer_json, path):
    """Name of llama.cpp's pre-tokenizer matching this byte-level BPE tokenizer, or an error."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre])
    kinds = [s.get("type") for s in steps]
    if kinds == ["Split", "ByteLevel"] and LLAMA3_SPLIT in json.dumps(steps[0].get("pattern", {}), ensure_ascii=False).replace("\\\\", "\\"):
        return "llama-bpe"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex"):
        return "smollm"
    raise InputError(f"unknown BPE pre-tokenizer {kinds}: only Llama 3 and SmolLM2 tokenizers are exported",
                     path, field="pre_tokenizer")


def vocab(model_dir, n_vocab):
    """(tokenizer model, pre-tokenizer, tokens, scores, token types) for the GGUF header."""
    model_dir = Path(model_dir)
    if (model_dir / "tokenizer.model").exists():
        spm = gguf.SentencePieceVocab(model_dir)
        tokens, scores, types = zip(*spm.all_tokens())
        return "llama", "default", list(tokens), list(scores), list(types)
    path = model_dir / "tokenizer.json"
    if not path.exists():
        raise InputError("no tokenizer.json or tokenizer.model", model_dir)
    tj = read_json(path)
    model = tj.get("model", {})
    byte_level = "ByteLevel" in json.dumps(tj.get("pre_tokenizer"))
    if model.get("type") == "BPE" and byte_level:
        kind, pre, rank = "gpt2", bpe_pre_tokenizer(tj, path), None
    elif model.get("type") == "BPE" and model.get("byte_fallback"):
        kind, pre = "llama", "default"  # SentencePiece exported as tokenizer.json
        rank = {}
        for r, merge in enumerate(model.get("merges", [])):
            pair = merge.split(" ", 1) if isinstance(merge, str) else merge
            rank.setdefault("".join(pair), r)
    else:
        raise InputError(f"unsupported tokenizer model {model.get('type')}", path, field="model")
    added = {t["content"]: t.get("special", False) for t in tj.get("added_tokens", [])}
    by_id = {i: t for t, i in model.get("vocab", {}).items()}
    by_id.update({t["id"]: t["content"] for t in tj.get("added_tokens", [])})
    tokens, scores, types = [], [], []
    for i in range(n_vocab):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]"), scores.append(-1000.0), types.append(gguf.TokenType.UNUSED)
            continue
        if text in added:
            ttype = gguf.TokenType.CONTROL if added[text] else gguf.TokenType.USER_DEFINED
        elif kind == "llama" and re.fullmatch(r"<0x[0-9A-F]{2}>", text):
            ttype = gguf.TokenType.BYTE
        else:
            ttype = gguf.TokenType.NORMAL
        if kind == "llama" and text == model.get("unk_token"):
            ttype = gguf.TokenType.UNKNOWN
        # SentencePiece merges the highest-scoring pair first; HF BPE merges the lowest rank first
        score = -float(rank.get(text, 0 if len(text) == 1 else len(rank))) if rank is not None else 0.0
        tokens.append(text), scores.append(score), types.append(ttype)
    return kind, pre, tokens, scores, types


def add_metadata(writer, model_dir, config, file_type, tokenizer=None):
    """tokenizer: vocab()'s result when already computed (export_model checks it before writing)."""
    n_head = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    writer.add_name(Path(model_dir).name)
    writer.add_file_type(file_type)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(config.get("num_key_value_heads", n_head))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config["vocab_size"])
    kind, pre, tokens, scores, types = tokenizer or vocab(model_dir, config["vocab_size"])
    writer.add_tokenizer_model(kind)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=(kind == "gpt2"), n_vocab=config["vocab_size"])
    special.add_to_gguf(writer, quiet=True)


def rope_theta(config):
    return (config.get("rope_parameters") or {}).get("rope_theta") or config.get("rope_theta", 10000.0)


def rope_scaling(config):
    scaling = config.get("rope_scaling") or config.get("rope_parameters") or {}
    return scaling if scaling.get("rope_type", scaling.get("type")) == "llama3" else None


def llama3_rope_factors(config):
    """Per-frequency scaling factors of Llama 3.1's rope (the `rope_freqs` tensor llama.cpp reads)."""
    s = rope_scaling(config)
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    freqs = 1.0 / rope_theta(config) ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    old_ctx = s.get("original_max_position_embeddings", 8192)
    low, high, factor = s.get("low_freq_factor", 1.0), s.get("high_freq_factor", 4.0), s["factor"]
    factors = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            factors.append(1.0)
        elif wavelen > old_ctx / low:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(factors, dtype=torch.float32)


# --- tensors ---

def unpermute_rope(weight, n_head):
    """HF keeps rotary halves split; llama.cpp's llama expects them interleaved per head."""
    rows = weight.shape[0]
    return (weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def prepare(name, weight, config):
    if name.endswith("q_proj.weight"):
        return unpermute_rope(weight, config["num_attention_heads"])
    if name.endswith("k_proj.weight"):
        return unpermute_rope(weight, config.get("num_key_value_heads", config["num_attention_heads"]))
    return weight


def out_type(shape, wanted):
    """1-D tensors stay F32; quantized types need rows divisible by their block size."""
    if len(shape) == 1 or wanted == gguf.GGMLQuantizationType.F32:
        return gguf.GGMLQuantizationType.F32
    block = gguf.GGML_QUANT_SIZES[wanted][0]
    if shape[-1] % block:
        return gguf.GGMLQuantizationType.F16
    return wanted


def encode(tensor, qtype):
    """torch tensor -> numpy data of the GGUF type (F16 straight from bf16/f32, exact as via f32)."""
    if qtype == gguf.GGMLQuantizationType.F16:
        return tensor.to(torch.float16).numpy()
    return gguf.quants.quantize(tensor.float().numpy(), qtype) if qtype not in NUMPY else tensor.float().numpy()


def nbytes(shape, qtype):
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return int(np.prod(shape)) // block * size


def write_streaming(path, arch, add_kv, plan, load):
    """plan: [(gguf name, shape, qtype)]; load(i) returns the i-th tensor (torch)."""
    writer = gguf.GGUFWriter(str(path), arch)
    add_kv(writer)
    for name, shape, qtype in plan:
        raw = qtype not in NUMPY
        stored = gguf.quant_shape_to_byte_shape(shape, qtype) if raw else shape
        writer.add_tensor_info(name, stored, np.uint8 if raw else NUMPY[qtype], nbytes(shape, qtype),
                               raw_dtype=qtype if raw else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for i, (name, shape, qtype) in enumerate(plan):
        writer.write_tensor_data(encode(load(i), qtype))
        if (i + 1) % 50 == 0 or i + 1 == len(plan):
            print(f"gguf: {i + 1}/{len(plan)} tensors", file=sys.stderr)
    writer.close()


def export_model(model_dir, output, outtype="f16", force=False):
    """Write `output` (.gguf) from an HF Llama-family model dir."""
    model_dir, output = Path(model_dir), Path(output)
    check_output(output, force)
    if outtype in K_QUANTS:
        with atomic_path(output, force) as tmp:
            f16 = tmp.with_suffix(".f16.gguf")
            export_model(model_dir, f16, "f16")
            quantize(f16, tmp, outtype)
            f16.unlink()
        return output
    if outtype not in FTYPES:
        raise InputError(f"unknown type {outtype}; choose from {', '.join([*FTYPES, *K_QUANTS])}")
    config = model_config(model_dir, llama_only=False)
    if not is_llama(config):
        return convert_with_llama_cpp(model_dir, output, outtype, force)
    wanted, file_type = FTYPES[outtype]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    plan, sources = [], []
    if rope_scaling(config):
        factors = llama3_rope_factors(config)
        plan.append(("rope_freqs.weight", factors.shape, gguf.GGMLQuantizationType.F32))
        sources.append((None, factors))
    for path in model_shards(model_dir):
        shard = Shard(path)
        for hf_name in shard.names():
            if "rotary_emb.inv_freq" in hf_name:
                continue
            name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise InputError(f"tensor {hf_name} has no GGUF name", path)
            shape = shard.shape(hf_name)
            plan.append((name, shape, out_type(shape, wanted)))
            sources.append((shard, hf_name))
    if config.get("tie_word_embeddings") is False and not any(p[0] == "output.weight" for p in plan):
        raise InputError("untied model without lm_head.weight", model_dir)
    tokenizer = vocab(model_dir, config["vocab_size"])  # an unsupported tokenizer fails before writing

    def load(i):
        shard, hf_name = sources[i]
        if shard is None:
            return hf_name
        return prepare(hf_name, shard.read(hf_name), config)

    with atomic_path(output, force) as tmp:
        write_streaming(tmp, "llama", lambda w: add_metadata(w, model_dir, config, file_type, tokenizer), plan, load)
    return output


def convert_script():
    """llama.cpp's convert_hf_to_gguf.py in the llama-cpp-python sources (scripts/setup.sh downloads them)."""
    found = sorted(glob.glob(str(CACHE / "sdist" / "llama_cpp_python-*" / "vendor" / "llama.cpp" /
                                 "convert_hf_to_gguf.py")))
    if not found:
        raise InputError("llama.cpp's convert_hf_to_gguf.py is missing: run scripts/setup.sh",
                         CACHE / "sdist")
    return Path(found[-1])


# llama.cpp gives Phi-3's special tokens (<|system|>, <|user|>, <|assistant|>, <|end|>, ...) the rstrip that
# Phi-3's tokenizer.json declares, which drops the "\n" the chat template writes after each of them as
# transformers (and so Axolotl) drops it, only when the GGUF's general.name contains "phi-3" or "phi3"
# (src/llama-vocab.cpp). convert_hf_to_gguf.py names the file after config.json's _name_or_path
# ("Phi-3.5-mini-instruct" -> "Phi 3.5 Mini Instruct") or the folder ("merged" -> "Merged"): without a
# name that matches, llama.cpp and Ollama feed a "\n" (and a lone "▁") after every marker, a prompt
# the fine-tune never saw in training.
NAME_MARKS = {"phi3": ("phi-3", "phi3")}  # model_type -> what llama.cpp looks for in general.name


def llama_cpp_model_name(model_dir, config):
    """--model-name for convert_hf_to_gguf.py where llama.cpp decides tokenization by general.name
    (Phi-3 whose tokenizer.json rstrips its special tokens), else None (the converter's own name)."""
    marks = NAME_MARKS.get(config.get("model_type"))
    path = Path(model_dir) / "tokenizer.json"
    if not marks or not path.is_file():
        return None
    if not any(t.get("special") and t.get("rstrip") for t in read_json(path).get("added_tokens", [])):
        return None
    name = Path(model_dir).resolve().name
    return name if any(mark in name.lower() for mark in marks) else f"Phi-3 {name}"


def convert_with_llama_cpp(model_dir, output, outtype, force=False):
    """Architectures other than Llama: llama.cpp's own converter, run as a subprocess with this Python
    (it imports the gguf-py next to it, which matches its own code), written to a temporary file."""
    script = convert_script()
    config_path = Path(model_dir) / "config.json"
    config = read_json(config_path)
    print(f"gguf: {architecture(config)} through {script}", file=sys.stderr)
    name = llama_cpp_model_name(model_dir, config)
    with atomic_path(output, force) as tmp:
        command = [sys.executable, str(script), str(model_dir), "--outtype", outtype, "--outfile", str(tmp)]
        if name:
            command += ["--model-name", name]
        proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "TQDM_DISABLE": "1"})
        if proc.returncode != 0 or not tmp.is_file():
            lines = [line for line in proc.stdout.splitlines() if line.strip()]
            reason = next((line for line in reversed(lines) if "Error" in line or "error" in line),
                          lines[-1] if lines else "no output")
            raise InputError(f"llama.cpp's convert_hf_to_gguf.py failed (exit {proc.returncode}): {reason}",
                             config_path, field="architectures")
    return Path(output)


def quantize(src, dst, qtype):
    """k-quants through llama.cpp's own quantizer (llama-cpp-python's llama_model_quantize)."""
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype.upper()}", None)
    if ftype is None:
        raise InputError(f"llama.cpp has no quantization type {qtype}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise RuntimeError(f"llama.cpp quantization to {qtype} failed ({rc})")


def export_adapter(adapter_dir, base_dir, output, force=False):
    """LoRA adapter -> GGUF adapter for llama.cpp's --lora and Ollama's ADAPTER (F32 tensors)."""
    adapter_dir, output = Path(adapter_dir), Path(output)
    check_output(output, force)
    config = model_config(base_dir)
    cfg, deltas = load_adapter(adapter_dir)
    check_compatible(base_dir, deltas)  # every adapted module exists in the base, with matching shapes
    if cfg.get("alpha_pattern") or cfg.get("rank_pattern"):
        raise InputError("per-module rank/alpha patterns cannot be expressed as one GGUF alpha",
                         adapter_dir / "adapter_config.json", field="alpha_pattern")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    rank = next(iter(deltas.values()))[0].shape[0]
    alpha = cfg.get("lora_alpha", rank) * (math.sqrt(rank) if cfg.get("use_rslora") else 1.0)
    plan, arrays = [], []
    for hf_name, (a, b, _) in deltas.items():
        name = names.get_name(hf_name, try_suffixes=(".weight",))
        if name is None:
            raise InputError(f"adapted module {hf_name} has no GGUF name", adapter_dir)
        b = prepare(hf_name, b.float(), config)  # the rope permutation acts on output rows
        for suffix, t in ((".lora_a", a.float()), (".lora_b", b)):
            plan.append((name + suffix, tuple(t.shape), gguf.GGMLQuantizationType.F32))
            arrays.append(t)

    def add_kv(writer):
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
        writer.add_name(adapter_dir.name)

    with atomic_path(output, force) as tmp:
        write_streaming(tmp, "llama", add_kv, plan, lambda i: arrays[i])
    return output


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m deploy.gguf", description=__doc__)
    parser.add_argument("model", help="merged HF model dir, or the base model dir with --adapter")
    parser.add_argument("-o", "--output", required=True, help=".gguf file to write")
    parser.add_argument("--outtype", default="f16", choices=[*FTYPES, *K_QUANTS])
    parser.add_argument("--adapter", help="write this LoRA adapter as a GGUF adapter instead")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    args = parser.parse_args(argv)
    if args.adapter:
        export_adapter(args.adapter, args.model, args.output, args.force)
    else:
        export_model(args.model, args.output, args.outtype, args.force)
    print(f"gguf: {args.output}")


if __name__ == "__main__":
    main()
