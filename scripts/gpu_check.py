"""Check a recipe on this machine's GPU before a long run: a few real training steps, measured.

  python -m scripts.gpu_check RECIPE [--steps 20] [--warmup 3] [--random-weights [--layers N]]
                              [--engine axolotl|peft] [--out DIR] [--peak-tflops X] [--cpu] [--force]

Runs the recipe as it is, with Axolotl's real launcher (`accelerate launch -m axolotl.cli.train`,
through common.axolotl_train), for --steps optimizer steps with evaluation and checkpoints off, and
reports, as gpu_check.json and gpu_check.md in --out (default outputs/gpu_check/<recipe>/<file>):

  peak memory     torch.cuda's peak allocated and reserved, and the device's used memory (what
                  nvidia-smi shows) against scripts.memory's estimate for the same config
  tokens/s        real tokens (attention_mask != 0) per second over the steps after --warmup
  MFU             model FLOPs per second / the card's peak dense bf16 FLOPs. Model FLOPs per token, LoRA
                  on a frozen base: 4 x frozen matmul params (forward, and backward to the inputs; no
                  weight gradients) + 6 x LoRA params + 12 x layers x query width x context (attention
                  scores and values, forward and backward; context = tokens per row, an upper bound
                  under packing). Recomputation by gradient checkpointing is not counted (as in MFU).
  packing         real tokens / token positions fed: 1.0 is no padding at all

--engine peft: the same measurements without Axolotl (a machine with torch, transformers and peft only):
the recipe's base model, dtype, 4/8-bit loading, LoRA (r, alpha, dropout, targets), gradient
checkpointing, AdamW at its learning rate, micro batches of micro_batch_size x sequence_len random
tokens (full rows, as packed data fills them), gradient_accumulation_steps per step; SDPA attention.
--random-weights: the base model at its real shape with random weights (for a machine that cannot
download them): its config from scripts.memory's ARCHITECTURES, the tokenizer of its local stand-in;
--layers N keeps N decoder layers (the estimate follows). --cpu: the smoke form on this machine
(scripts.cpu_run's CPU config of the recipe on its stand-in; memory is the process's peak RSS).
"""
import argparse
import copy
import json
import shutil
import sys
from pathlib import Path

from common import CACHE, ROOT
from common.errors import InputError, StepError, cli
from common.io import atomic_open, check_output, read_jsonl
from common.models import stand_in_for
from common.run import Run
from scripts import cpu_run, memory

METRICS_PLUGIN = "common.train_metrics.Metrics"
GIB = 1024 ** 3
# peak dense bf16 tensor FLOP/s (fp16 with fp32 accumulate for the 4090, fp16 for the T4), NVIDIA's
# data sheets; matched against torch.cuda.get_device_name(), first match wins
PEAK_TFLOPS = (("h200", 989.4), ("h100 pcie", 756.0), ("h100", 989.4), ("a100", 312.0),
               ("4090", 165.2), ("l40s", 362.05), ("l4", 121.0), ("a10g", 70.0), ("a10", 125.0),
               ("t4", 65.0))
DROP = ("test_datasets", "eval_steps", "evals_per_epoch", "val_set_size", "save_steps", "saves_per_epoch",
        "save_total_limit", "save_first_step", "hub_strategy", *cpu_run.REMOTE)


def peak_tflops(device_name):
    name = device_name.lower()
    return next((tf for key, tf in PEAK_TFLOPS if key in name), None)


# ------------------------------------------------------------------ the base model at its real shape

def twin_config(base_model, layers=None, max_len=2048):
    """The transformers config dict of base_model at its real shape, from its stand-in's config
    (architecture, rope, special tokens) with scripts.memory's dimensions."""
    arch = memory.ARCHITECTURES.get(str(base_model).lower())
    local = stand_in_for(base_model)
    if arch is None or local is None:
        raise InputError(f"--random-weights knows the shapes of {', '.join(sorted(memory.ARCHITECTURES))} "
                         f"only, not {base_model!r}", field="base_model")
    cfg = json.loads((local / "config.json").read_text(encoding="utf-8"))
    cfg.update(num_hidden_layers=layers or arch.layers, hidden_size=arch.hidden,
               intermediate_size=arch.intermediate, num_attention_heads=arch.heads,
               num_key_value_heads=arch.kv_heads, head_dim=arch.hd, vocab_size=arch.vocab,
               tie_word_embeddings=arch.tied,
               max_position_embeddings=max(int(cfg.get("max_position_embeddings") or 0), int(max_len)))
    return cfg, local


def build_twin(base_model, layers=None, max_len=2048, device="cpu", dtype="bfloat16"):
    """Write (once) base_model at its real shape with random weights; returns its directory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg, local = twin_config(base_model, layers, max_len)
    name = str(base_model).replace("/", "--") + f"-L{cfg['num_hidden_layers']}-{dtype}"
    out = CACHE / "shape-twins" / name
    if (out / "config.json").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in local.iterdir():  # tokenizer and generation files of the stand-in
        if f.is_file() and not f.name.endswith((".safetensors", ".bin", ".gguf")) and f.name != "config.json":
            shutil.copy2(f, tmp / f.name)
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    config = AutoConfig.from_pretrained(tmp)
    print(f"gpu_check: random {base_model} at its real shape ({config.num_hidden_layers} layers) -> {out}",
          file=sys.stderr)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(tmp)
    del model
    tmp.rename(out)
    return out


# ------------------------------------------------------------------ the run

def check_config(run, steps, out, random_weights=False, layers=None, cpu=False):
    """The recipe's config for the check: max_steps, no evaluation or checkpoints, the metrics plugin;
    --cpu: scripts.cpu_run's CPU config of it."""
    if cpu:
        cfg, _ = cpu_run.cpu_config(run, max_steps=steps, output_dir=out / "run", validate=False)
    else:
        cfg = copy.deepcopy(run.cfg)
        cfg.update(max_steps=int(steps), output_dir=str(out / "run"), dataset_prepared_path=str(out / "prepared"),
                   eval_strategy="no")
        if random_weights:
            import torch

            cfg["base_model"] = str(build_twin(run.base_model, layers, cfg.get("sequence_len") or 2048,
                                               "cuda" if torch.cuda.is_available() else "cpu"))
    for key in DROP:
        cfg.pop(key, None)
    cfg.update(save_strategy="no", logging_steps=1, include_tokens_per_second=True)  # the Trainer counts too
    cfg["plugins"] = [*(p for p in cfg.get("plugins") or [] if p != METRICS_PLUGIN), METRICS_PLUGIN]
    return cfg


def launch(config_path, cpu, log_path):
    """Axolotl's train CLI through the real launcher (accelerate launch; --cpu: scripts.cpu_run's CPU
    launch, offline); output streamed and kept in log_path. On a GPU the hub stays reachable: Axolotl's
    config check fetches the flash-attention kernel (kernels-community/flash-attn2) from it."""
    command = None if cpu else [str(Path(sys.executable).parent / "accelerate"), "launch", "-m",
                                "common.axolotl_train", str(config_path)]
    return cpu_run.train(config_path, log_path, command, offline=cpu)


def peft_steps(cfg, steps, metrics_path):
    """--engine peft: the recipe's LoRA training step with transformers + peft alone, measured by the same
    Recorder as the Axolotl run (see the module docstring). Returns the number of trainable parameters."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    from common.train_metrics import Recorder

    cuda = torch.cuda.is_available()
    dtype = torch.float32
    if cuda and cfg.get("bf16") in (True, "auto"):
        dtype = torch.bfloat16
    elif cuda and cfg.get("fp16"):
        dtype = torch.float16
    kwargs = {"dtype": dtype, "attn_implementation": "sdpa"}
    kbit = bool(cfg.get("load_in_4bit") or cfg.get("load_in_8bit"))
    if kbit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=bool(cfg.get("load_in_4bit")), load_in_8bit=bool(cfg.get("load_in_8bit")),
            bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(cfg["base_model"], device_map={"": 0} if cuda else None, **kwargs)
    checkpointing = bool(cfg.get("gradient_checkpointing"))
    if kbit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    targets = "all-linear" if cfg.get("lora_target_linear") else cfg.get("lora_target_modules")
    model = get_peft_model(model, LoraConfig(r=int(cfg.get("lora_r") or 8), lora_alpha=int(cfg.get("lora_alpha") or 16),
                                             lora_dropout=float(cfg.get("lora_dropout") or 0.0),
                                             target_modules=targets, task_type="CAUSAL_LM"))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable,
                                  lr=float(cfg.get("learning_rate") or 2e-4))
    shape = (int(cfg.get("micro_batch_size") or 1), int(cfg.get("sequence_len") or 2048))
    accumulation = int(cfg.get("gradient_accumulation_steps") or 1)
    generator = torch.Generator().manual_seed(0)
    recorder = Recorder(metrics_path)
    recorder.begin_training(model)
    for step in range(1, steps + 1):
        recorder.begin_step()
        for _ in range(accumulation):
            ids = torch.randint(0, model.config.vocab_size, shape, generator=generator).to(model.device)
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss / accumulation
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        recorder.end_step(step, step * accumulation * ids.numel())
        print(f"step {step}/{steps}  loss {loss.item() * accumulation:.4f}", flush=True)
    return sum(p.numel() for p in trainable)


def flops_per_token(est, context):
    arch = memory.arch_for(est["base_model"])
    frozen = arch.linear_params() + arch.vocab * arch.hidden  # decoder projections and lm_head
    return round(4 * frozen + 6 * est["trainable_params"] + 12 * arch.layers * arch.q_dim * context)


def summarize(rows, cfg, warmup, device=None, tflops=None, num_gpus=None):
    """The report dict from step_metrics rows, the run's config and the device (num_gpus: the GPUs a
    DeepSpeed/FSDP run shards over, for the estimate)."""
    if not rows:
        raise StepError("gpu_check: the run wrote no step metrics")
    measured = rows[warmup:] if len(rows) > warmup else rows[-1:]
    seconds = sum(r["seconds"] for r in measured)
    tokens = sum(r["tokens"] for r in measured)
    est = memory.estimate(cfg, num_gpus=num_gpus)
    context = sum(r["tokens"] for r in rows) / max(sum(r["rows"] for r in rows), 1)
    report = {
        "base_model": cfg["base_model"], "device": device or "cpu", "steps": len(rows),
        "measured_steps": len(measured), "micro_batch_size": est["micro_batch_size"],
        "sequence_len": est["sequence_len"], "gradient_accumulation_steps": cfg.get("gradient_accumulation_steps", 1),
        "sample_packing": bool(cfg.get("sample_packing")),
        "tokens_per_step": round(tokens / len(measured)), "seconds_per_step": round(seconds / len(measured), 4),
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        "packing_efficiency": round(sum(r["tokens"] for r in rows) / max(sum(r["slots"] for r in rows), 1), 4),
        "flops_per_token": flops_per_token(est, context),
        "estimate_gib": est["total_gib"],
        "trainable_params_estimate": est["trainable_params"],
    }
    if "device_used_gib" in rows[-1]:
        for key in ("peak_allocated_gib", "peak_reserved_gib", "device_used_gib"):
            report[key] = max(r[key] for r in rows)
        report["estimate_over_measured"] = round(est["total_gib"] / report["device_used_gib"], 3)
    report["peak_rss_gib"] = max(r["rss_gib"] for r in rows)
    tflops = tflops or (peak_tflops(device) if device else None)
    report["peak_tflops"] = tflops
    report["mfu"] = round(report["flops_per_token"] * report["tokens_per_s"] / (tflops * 1e12), 4) \
        if tflops and report["tokens_per_s"] else None
    return report


def markdown(report, recipe):
    def cell(v):
        return "n/a" if v is None else f"{v:,.3f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) \
            and not isinstance(v, bool) else str(v)

    lines = [f"# gpu_check: {recipe}", "", "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {cell(v)} |" for k, v in report.items()]
    return "\n".join(lines) + "\n"


def check(recipe, steps=20, warmup=3, out=None, random_weights=False, layers=None, cpu=False,
          tflops=None, force=False, engine="axolotl"):
    """Run the check; returns the report dict (also written as JSON and Markdown under out)."""
    run = Run.load(recipe)
    out = Path(out or ROOT / "outputs" / "gpu_check" / run.path.parent.name / run.path.stem)
    check_output(out / "gpu_check.json", force)
    device = num_gpus = None
    if not cpu:
        import torch

        if not torch.cuda.is_available():
            raise StepError("gpu_check: no CUDA device here (use --cpu for the smoke form)")
        device, num_gpus = torch.cuda.get_device_name(0), torch.cuda.device_count()
        if not random_weights and not Path(run.base_model).is_dir() and not _cached(run.base_model):
            raise InputError(f"{run.base_model} is neither a local directory nor in the Hugging Face cache: "
                             "download it, or pass --random-weights", run.path, run.line("base_model"),
                             "base_model")
    cfg = check_config(run, steps, out, random_weights, layers, cpu)
    shutil.rmtree(out / "run", ignore_errors=True)
    (out / "run").mkdir(parents=True)
    import yaml

    config_path = out / "config.yml"
    with atomic_open(config_path, force=True) as fh:
        yaml.safe_dump(cfg, fh, sort_keys=False)
    print(f"gpu_check: {run.path}, {steps} steps -> {config_path}", file=sys.stderr)
    from common.train_metrics import FILE

    rc, trainable = 0, None
    if engine == "peft":
        trainable = peft_steps(cfg, steps, out / "run" / FILE)
    else:
        rc = launch(config_path, cpu, out / "train.log")
    if rc != 0:
        raise StepError(f"gpu_check: training exited with {rc}; see {out / 'train.log'}")
    rows = [row for _, row in read_jsonl(out / "run" / FILE)]
    report = {"recipe": str(run.path), "engine": engine, **summarize(rows, cfg, warmup, device, tflops, num_gpus)}
    if trainable is not None:
        report["trainable_params"] = trainable  # PEFT's count, beside the estimate's
    with atomic_open(out / "gpu_check.json", force=True) as fh:
        json.dump(report, fh, indent=2)
    with atomic_open(out / "gpu_check.md", force=True) as fh:
        fh.write(markdown(report, run.path))
    return report


def _cached(repo_id):
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(str(repo_id), "config.json"), str)


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m scripts.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="recipes/<name>/<file>.yml")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps to run (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the speed (default 3)")
    parser.add_argument("--random-weights", action="store_true", help="the base model's real shape, random weights")
    parser.add_argument("--layers", type=int, help="with --random-weights: keep this many decoder layers")
    parser.add_argument("--peak-tflops", type=float, help="the card's peak dense bf16 TFLOP/s (default: by its name)")
    parser.add_argument("--out", help="default outputs/gpu_check/<recipe folder>/<recipe file>")
    parser.add_argument("--engine", choices=("axolotl", "peft"), default="axolotl",
                        help="peft: transformers + peft alone, random tokens (no Axolotl on the machine)")
    parser.add_argument("--cpu", action="store_true", help="smoke form on this machine's CPU (stand-in model)")
    parser.add_argument("--force", action="store_true", help="replace an earlier report")
    args = parser.parse_args(argv)
    if args.layers and not args.random_weights:
        parser.error("--layers needs --random-weights")
    report = check(args.recipe, args.steps, args.warmup, args.out, args.random_weights, args.layers, args.cpu,
                   args.peak_tflops, args.force, args.engine)
    print(markdown(report, report["recipe"]))
    return 0


if __name__ == "__main__":
    main()
