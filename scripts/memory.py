"""Estimate the peak GPU memory of a recipe's training run, per GPU, and whether it fits a card.

  python -m scripts.memory RECIPE [--gpu h100|a100-80|a100-40|rtx4090|l4|a10g|t4 | --gpu-gb 24]
                                  [--num-gpus N] [--micro-batch-size N] [--sequence-len N] [--json]

The model (bytes; "h" hidden size, "i" MLP size, "q"/"kv" query/key-value widths, "V" vocabulary,
"L" layers, "T" tokens per micro batch = micro_batch_size x sequence_len):

  base weights   decoder projections at their load precision: 4-bit NF4 0.5 byte/param + quant
                 constants (double quant: 1/64 + 4/(64*256) byte/param), 8-bit 1 byte/param + one fp32
                 scale per row, else 2 bytes (bf16/fp16; 4 without either). Embeddings, lm_head and
                 norms stay in the 16-bit compute dtype (bitsandbytes does not quantize them).
  LoRA           r*(in+out) params per target module per layer, kept in fp32 by PEFT: weights 4,
                 gradients 4, AdamW's two states 8 bytes/param (8-bit optimizers: 2); no extra master
                 copy because the trainable params already are fp32.
  activations    per layer and token, what autograd keeps for backward in a Llama block:
                 RMSNorm fp32 inputs 2 x 4h; attention (flash/SDPA) q, k, v and output 2(2q + 2kv);
                 MLP gate and up outputs and SiLU(gate) 3 x 2i; LoRA inputs 2 bytes x in (shared by
                 q/k/v and by gate/up; o and down reuse saved tensors), or, with lora_dropout > 0, a
                 dropout output and mask per module 3 bytes x in; LoRA A outputs 2r. Eager attention
                 adds 6 bytes x heads x sequence_len per token.
                 Without gradient checkpointing: L layers of that, plus one layer's worth as backward
                 workspace. With it: each layer's input (2h) for L layers, plus two layers' worth (the
                 layer being recomputed and its gradients).
  logits + loss  T x V x 14 bytes (transformers' loss path): the 16-bit logits the model returns (2), their
                 fp32 upcast (4), the fp32 log-softmax cross_entropy keeps (4) and its fp32 gradient (4).
  overhead       1 GiB: CUDA context, cuBLAS/NCCL workspaces, allocator slack.
  multi-GPU      ZeRO-2: gradients and optimizer states / N; ZeRO-3 and FSDP: weights too / N, plus one
                 gathered decoder layer and the gathered embed_tokens and lm_head (16-bit, V x h each; ~1 GiB
                 each for Llama-3.1-8B: the root unit holds them through forward and backward); activations
                 are per GPU in every case.
  cards          bf16: true or flash attention (attn_implementation flash_attention_2, flash_attention: true)
                 need Ampere (sm_80) or newer: such a recipe never "fits" a T4 (sm_75), whatever its size.

Sample packing does not change the estimate (T tokens either way). Not modelled: the brief fp32
upcast of embeddings while a k-bit model is prepared, fragmentation beyond the 1 GiB, evaluation.
"""
import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from common import ROOT
from common.errors import InputError, cli
from common.run import Run

GIB = 1024 ** 3
OVERHEAD_GIB = 1.0
LOSS_BYTES = 14      # per logits element (see the docstring)
AMPERE = 80          # compute capability 8.0: bf16 and FlashAttention-2


@dataclass(frozen=True)
class Arch:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool = False
    head_dim: int = 0

    @property
    def hd(self):
        return self.head_dim or self.hidden // self.heads

    @property
    def q_dim(self):
        return self.heads * self.hd

    @property
    def kv_dim(self):
        return self.kv_heads * self.hd

    def modules(self):
        """Llama projection name -> (in_features, out_features)."""
        h, i, q, kv = self.hidden, self.intermediate, self.q_dim, self.kv_dim
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def linear_params(self):
        return self.layers * sum(a * b for a, b in self.modules().values())

    def other_params(self):
        """Embeddings, lm_head and norms (never quantized)."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + (2 * self.layers + 1) * self.hidden

    def params(self):
        return self.linear_params() + self.other_params()


TINYLLAMA_1B = Arch(layers=22, hidden=2048, intermediate=5632, heads=32, kv_heads=4, vocab=32000)
LLAMA31_8B = Arch(layers=32, hidden=4096, intermediate=14336, heads=32, kv_heads=8, vocab=128256)
SMOLLM2_135M = Arch(layers=30, hidden=576, intermediate=1536, heads=9, kv_heads=3, vocab=49152, tied=True)
# hub id (lower case) -> architecture, from the models' config.json
ARCHITECTURES = {
    "tinyllama/tinyllama-1.1b-chat-v1.0": TINYLLAMA_1B,
    "tinyllama/tinyllama-1.1b-intermediate-step-1431k-3t": TINYLLAMA_1B,
    "meta-llama/llama-3.1-8b-instruct": LLAMA31_8B,
    "meta-llama/llama-3.1-8b": LLAMA31_8B,
    "meta-llama/meta-llama-3.1-8b-instruct": LLAMA31_8B,
    "huggingfacetb/smollm2-135m-instruct": SMOLLM2_135M,
}
# total memory as nvidia-smi reports it, MiB
GPUS = {"h100": 81559, "a100-80": 81920, "a100-40": 40960, "rtx4090": 24564, "l4": 23034,
        "a10g": 23028, "t4": 15360}
# compute capability x 10 (NVIDIA's CUDA GPUs table)
CAPABILITY = {"h100": 90, "a100-80": 80, "a100-40": 80, "rtx4090": 89, "l4": 89, "a10g": 86, "t4": 75}
LORA_GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))  # modules fed the same input


def arch_for(base_model, recipe=None):
    """Architecture of a hub id in ARCHITECTURES, or read from a local model directory's config.json."""
    key = str(base_model).lower()
    if key in ARCHITECTURES:
        return ARCHITECTURES[key]
    path = Path(str(base_model))
    path = path if path.is_absolute() else ROOT / path
    config = path / "config.json"
    if config.exists():
        c = json.loads(config.read_text(encoding="utf-8"))
        return Arch(layers=c["num_hidden_layers"], hidden=c["hidden_size"], intermediate=c["intermediate_size"],
                    heads=c["num_attention_heads"], kv_heads=c.get("num_key_value_heads", c["num_attention_heads"]),
                    vocab=c["vocab_size"], tied=bool(c.get("tie_word_embeddings", False)),
                    head_dim=c.get("head_dim") or 0)
    raise InputError(f"unknown architecture {base_model!r}: add it to ARCHITECTURES in scripts/memory.py "
                     "or point base_model at a local model directory", recipe, field="base_model")


def _targets(cfg, arch, recipe):
    if cfg.get("lora_target_linear"):
        return list(arch.modules())
    targets = cfg.get("lora_target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    unknown = [t for t in targets if t not in arch.modules()]
    if unknown:
        raise InputError(f"cannot size LoRA on {unknown} (known: {', '.join(arch.modules())})", recipe,
                         field="lora_target_modules")
    return targets


def _distributed(cfg):
    """'zero1'/'zero2'/'zero3'/'fsdp' or None."""
    if cfg.get("fsdp_config") or cfg.get("fsdp"):
        offload = (cfg.get("fsdp_config") or {}).get("offload_params") or \
            (cfg.get("fsdp_config") or {}).get("fsdp_offload_params")
        return "fsdp-offload" if offload else "fsdp"
    ds = cfg.get("deepspeed")
    if ds:
        path = Path(str(ds))
        path = path if path.is_absolute() else ROOT / path
        try:
            stage = json.loads(path.read_text(encoding="utf-8")).get("zero_optimization", {}).get("stage", 0)
        except (OSError, json.JSONDecodeError):
            stage = 3 if "3" in path.name else 2
        return f"zero{stage}"
    return None


def needs_ampere(cfg):
    """What in a recipe needs an Ampere-or-newer card (bf16, flash attention); [] when any CUDA card runs it."""
    reasons = []
    if cfg.get("bf16") is True:
        reasons.append("bf16: true")
    attn = str(cfg.get("attn_implementation") or "")
    if attn.startswith("flash_attention") or cfg.get("flash_attention"):
        reasons.append(f"attn_implementation: {attn}" if attn else "flash_attention: true")
    return reasons


def runs_on(cfg, gpu):
    return not needs_ampere(cfg) or CAPABILITY[gpu] >= AMPERE


def estimate(cfg, recipe=None, num_gpus=None, micro_batch_size=None, sequence_len=None,
             loss_bytes=LOSS_BYTES, overhead_gib=OVERHEAD_GIB):
    """Peak training memory per GPU for a recipe dict; returns a dict (bytes and a description).
    loss_bytes and overhead_gib are for comparing with other trainers (tests/test_memory.py)."""
    arch = arch_for(cfg.get("base_model"), recipe)
    bits = 4 if cfg.get("load_in_4bit") or cfg.get("adapter") == "qlora" else 8 if cfg.get("load_in_8bit") else 16
    half = bool(cfg.get("bf16") or cfg.get("fp16") or bits < 16)
    dist = _distributed(cfg)
    n = int(num_gpus or (4 if dist else 1))
    mbs = int(micro_batch_size or cfg.get("micro_batch_size") or 1)
    seq = int(sequence_len or cfg.get("sequence_len") or 2048)
    tokens = mbs * seq
    rank = int(cfg.get("lora_r") or 8)
    dropout = float(cfg.get("lora_dropout") or 0.0)
    targets = _targets(cfg, arch, recipe)
    fsdp = cfg.get("fsdp_config") or {}
    checkpointing = bool(cfg.get("gradient_checkpointing") or fsdp.get("activation_checkpointing")
                         or fsdp.get("fsdp_activation_checkpointing"))
    eager = cfg.get("attn_implementation") == "eager" or bool(cfg.get("eager_attention"))
    mods = arch.modules()

    # --- weights
    linear = arch.linear_params()
    if bits == 4:
        per_param, weight_label = 0.5 + 1 / 64 + 4 / (64 * 256), "4-bit NF4"
    elif bits == 8:
        per_param, weight_label = 1 + 4 / arch.hidden, "8-bit"   # + an fp32 scale per row
    else:
        per_param = 2 if half else 4
        weight_label = "bf16" if cfg.get("bf16") else "fp16" if cfg.get("fp16") else "fp32"
    weight_bytes = linear * per_param + arch.other_params() * (2 if half else 4)

    # --- LoRA
    lora_params = arch.layers * sum(rank * (mods[m][0] + mods[m][1]) for m in targets)
    optimizer = str(cfg.get("optimizer") or "adamw_torch_fused")
    state_bytes = 2 if "8bit" in optimizer else 8
    lora_weights, lora_grads, opt_states = lora_params * 4, lora_params * 4, lora_params * state_bytes

    # --- activations, per token per layer (bytes)
    act = 2 * 4 * arch.hidden                                    # two RMSNorm fp32 inputs
    act += 2 * (2 * arch.q_dim + 2 * arch.kv_dim)                # q, k, v, attention output
    act += 3 * 2 * arch.intermediate                             # gate out, up out, SiLU(gate)
    if eager:
        act += 6 * arch.heads * seq
    if dropout > 0:
        act += sum(3 * mods[m][0] for m in targets)
    else:
        for group in LORA_GROUPS:
            if any(m in targets for m in group):
                act += 2 * mods[group[0]][0]
    act += sum(2 * rank for _ in targets)
    if checkpointing:
        activations = tokens * (arch.layers * 2 * arch.hidden + 2 * act)
    else:
        activations = tokens * (arch.layers + 1) * act
    logits = tokens * arch.vocab * loss_bytes

    # --- sharding over GPUs
    if dist in ("zero2", "zero3", "fsdp", "fsdp-offload"):
        lora_grads /= n
    if dist in ("zero1", "zero2", "zero3", "fsdp", "fsdp-offload"):
        opt_states /= n
    gathered = sum(a * b for a, b in mods.values()) * per_param \
        + arch.vocab * arch.hidden * (1 if arch.tied else 2) * (2 if half else 4)   # a layer, embed_tokens, lm_head
    if dist in ("zero3", "fsdp"):
        weight_bytes = weight_bytes / n + gathered
        lora_weights /= n
    elif dist == "fsdp-offload":
        weight_bytes = gathered   # only what is gathered lives on the GPU

    parts = [
        (f"base weights ({weight_label}{', sharded /' + str(n) + ' + gathered' if dist in ('zero3', 'fsdp') else ''})",
         weight_bytes),
        ("LoRA weights (fp32)", lora_weights),
        ("LoRA gradients (fp32)", lora_grads),
        (f"optimizer states ({'8-bit' if state_bytes == 2 else 'AdamW 2 x fp32'})", opt_states),
        (f"activations ({'checkpointed' if checkpointing else 'no checkpointing'})", activations),
        ("logits + loss", logits),
        ("CUDA context + workspace", overhead_gib * GIB),
    ]
    total = sum(b for _, b in parts)
    return {
        "base_model": cfg.get("base_model"),
        "params": arch.params(),
        "trainable_params": lora_params,
        "load": weight_label,
        "adapter": cfg.get("adapter"),
        "lora_r": rank,
        "lora_targets": targets,
        "micro_batch_size": mbs,
        "sequence_len": seq,
        "gradient_checkpointing": checkpointing,
        "distributed": dist,
        "num_gpus": n,
        "needs_ampere": needs_ampere(cfg),
        "components_gib": {name: round(b / GIB, 3) for name, b in parts},
        "total_gib": round(total / GIB, 2),
    }


def fits(total_gib, capacity_gib):
    return total_gib <= capacity_gib


def fitting_gpus(result):
    """Known cards with room for the estimate and the compute capability the recipe needs."""
    return [g for g, mib in GPUS.items() if fits(result["total_gib"], mib / 1024)
            and (CAPABILITY[g] >= AMPERE or not result["needs_ampere"])]


def card_capacity(gpu=None, gpu_gb=None):
    if gpu_gb is not None:
        return f"{gpu_gb:g} GiB card", float(gpu_gb)
    if gpu is not None:
        return gpu, GPUS[gpu] / 1024
    return None, None


def render(result, recipe, card=None, capacity=None):
    lines = [f"recipe: {recipe}",
             f"model:  {result['base_model']} ({result['params'] / 1e9:.2f} B params, weights {result['load']})",
             f"setup:  {result['adapter']} r={result['lora_r']} on {len(result['lora_targets'])} modules "
             f"({result['trainable_params'] / 1e6:.1f} M trainable), micro batch {result['micro_batch_size']} x "
             f"{result['sequence_len']} tokens, gradient checkpointing "
             f"{'on' if result['gradient_checkpointing'] else 'off'}"
             + (f", {result['distributed']} over {result['num_gpus']} GPUs (per GPU below)"
                if result["distributed"] else ", 1 GPU"),
             ""]
    width = max(len(k) for k in result["components_gib"]) + 2
    lines.append(f"{'component':<{width}}{'GiB':>8}")
    for name, gib in result["components_gib"].items():
        lines.append(f"{name:<{width}}{gib:>8.2f}")
    lines.append(f"{'total (estimate)':<{width}}{result['total_gib']:>8.2f}")
    lines.append("")
    if result["needs_ampere"]:
        lines.append(f"needs Ampere (sm_80) or newer for {' and '.join(result['needs_ampere'])}")
    if card:
        verdict = "fits" if fits(result["total_gib"], capacity) else "does NOT fit"
        if card in CAPABILITY and CAPABILITY[card] < AMPERE and result["needs_ampere"]:
            verdict = f"cannot run it (sm_{CAPABILITY[card]}: no {' / '.join(result['needs_ampere'])})"
        lines.append(f"{card} ({capacity:.1f} GiB): {verdict} "
                     f"({capacity - result['total_gib']:+.1f} GiB headroom)")
    else:
        ok = fitting_gpus(result)
        lines.append(f"fits: {', '.join(ok) if ok else 'none of ' + ', '.join(GPUS)}")
    return "\n".join(lines)


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m scripts.memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="recipes/<name>/<file>.yml")
    card = parser.add_mutually_exclusive_group()
    card.add_argument("--gpu", choices=sorted(GPUS), help="a known card")
    card.add_argument("--gpu-gb", type=float, help="card memory in GiB")
    parser.add_argument("--num-gpus", type=int, help="GPUs for DeepSpeed/FSDP recipes (default 4)")
    parser.add_argument("--micro-batch-size", type=int, help="override the recipe's micro_batch_size")
    parser.add_argument("--sequence-len", type=int, help="override the recipe's sequence_len")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    cfg = Run.load(args.recipe).cfg
    result = estimate(cfg, args.recipe, args.num_gpus, args.micro_batch_size, args.sequence_len)
    name, capacity = card_capacity(args.gpu, args.gpu_gb)
    if args.json:
        out = {"recipe": str(args.recipe), **result}
        if name:
            out.update(gpu=name, gpu_gib=round(capacity, 2), fits=fits(result["total_gib"], capacity)
                       and (name not in CAPABILITY or name in fitting_gpus({**result, "total_gib": 0})))
        else:
            out["fits_gpus"] = fitting_gpus(result)
        print(json.dumps(out, indent=2))
    else:
        print(render(result, args.recipe, name, capacity))


if __name__ == "__main__":
    main()
