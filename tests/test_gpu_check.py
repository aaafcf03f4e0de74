"""scripts.gpu_check: the real-shape model, the GPU config Axolotl accepts, the report's arithmetic, and
the CPU smoke run through the real launcher."""
import copy
import json

import pytest

from common import ROOT
from common.run import Run
from scripts import gpu_check, memory
from scripts.check_recipes import GPU_CAPABILITIES

GPU_RECIPES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "recipes").glob("*/*.yml")
                     if "135m" not in p.name)


@pytest.mark.parametrize("hub_id,params", [("TinyLlama/TinyLlama-1.1B-Chat-v1.0", 1_100_048_384),
                                           ("meta-llama/Llama-3.1-8B-Instruct", 8_030_261_248)])
def test_random_weights_model_has_the_real_parameter_count(hub_id, params):
    """transformers builds the twin's config (on the meta device) with the parameter count the model
    cards give; --layers keeps that many decoder layers."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    def count(config):
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
        return sum(p.numel() for p in model.parameters())

    config, local = gpu_check.twin_config(hub_id)
    assert count(config) == params == memory.arch_for(hub_id).params()
    assert (local / "tokenizer_config.json").exists()
    short, _ = gpu_check.twin_config(hub_id, layers=2)
    arch = memory.arch_for(hub_id)
    per_layer = (arch.linear_params() + 2 * arch.layers * arch.hidden) // arch.layers
    assert count(config) - count(short) == (arch.layers - 2) * per_layer


def test_random_weights_refuses_an_unknown_shape():
    with pytest.raises(Exception, match="knows the shapes of"):
        gpu_check.twin_config("Qwen/Qwen2.5-0.5B-Instruct")


@pytest.mark.parametrize("recipe", GPU_RECIPES)
def test_gpu_check_config_is_valid_for_axolotl_on_an_h100(recipe, tmp_path):
    """The config gpu_check launches passes Axolotl's own validation with an H100's capabilities and
    keeps the recipe's training settings; only steps, evaluation, saving and logging change."""
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    run = Run.load(ROOT / recipe)
    cfg = gpu_check.check_config(run, 7, tmp_path)
    caps = {**GPU_CAPABILITIES, "n_gpu": 4 if cfg.get("deepspeed") or cfg.get("fsdp_config") else 1}
    valid = validate_config(DictDefault(copy.deepcopy(cfg)), capabilities=caps,
                            env_capabilities={"torch_version": "2.8.0"})
    assert valid.max_steps == 7 and valid.save_strategy == "no" and not valid.test_datasets
    assert gpu_check.METRICS_PLUGIN in valid.plugins
    for key in ("base_model", "micro_batch_size", "gradient_accumulation_steps", "sequence_len",
                "sample_packing", "adapter", "lora_r", "bf16", "load_in_4bit", "gradient_checkpointing"):
        assert cfg.get(key) == run.cfg.get(key), key


def rows(n, seconds=2.0, tokens=1000, slots=1024, rows_=2, **gpu):
    return [{"step": i + 1, "seconds": seconds * (5 if i == 0 else 1), "tokens": tokens, "slots": slots,
             "rows": rows_, "rss_gib": 3.0, **gpu} for i in range(n)]


def test_summary_leaves_out_warmup_and_computes_mfu():
    cfg = Run.load(ROOT / "recipes/llama3-character-chat/lora-8b.yml").cfg
    gpu = {"peak_allocated_gib": 20.0, "peak_reserved_gib": 22.0, "device_used_gib": 23.0}
    report = gpu_check.summarize(rows(6, **gpu), cfg, warmup=1, device="NVIDIA H100 80GB HBM3")
    assert report["measured_steps"] == 5 and report["seconds_per_step"] == 2.0
    assert report["tokens_per_s"] == 500.0 and report["packing_efficiency"] == pytest.approx(1000 / 1024, abs=1e-4)
    arch, est = memory.LLAMA31_8B, memory.estimate(cfg)
    flops = 4 * (arch.linear_params() + arch.vocab * arch.hidden) + 6 * est["trainable_params"] \
        + 12 * arch.layers * arch.q_dim * 500  # 1000 tokens over 2 rows
    assert report["flops_per_token"] == round(flops)
    assert report["mfu"] == pytest.approx(flops * 500 / 989.4e12, abs=1e-4)
    assert report["estimate_over_measured"] == pytest.approx(est["total_gib"] / 23.0, abs=1e-3)


def test_peak_flops_by_card_name():
    assert gpu_check.peak_tflops("NVIDIA H200") == 989.4
    assert gpu_check.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.peak_tflops("NVIDIA A10G") == 70.0 and gpu_check.peak_tflops("NVIDIA A10") == 125.0
    assert gpu_check.peak_tflops("NVIDIA L4") == 121.0 and gpu_check.peak_tflops("NVIDIA L40S") == 362.05
    assert gpu_check.peak_tflops("some cpu") is None


def test_packed_batch_counts_its_samples_not_the_padding():
    """Under sample packing Axolotl drops the attention mask (position_ids restart at each sample): the
    recorder counts the packed samples' tokens, not the pad tail of Axolotl's own collator, with pad = eos."""
    import torch
    from axolotl.utils.collators import V2BatchSamplerDataCollatorForSeq2Seq
    from transformers import AutoTokenizer

    from common.models import stand_in_for
    from common.train_metrics import Recorder

    tokenizer = AutoTokenizer.from_pretrained(stand_in_for("TinyLlama/TinyLlama-1.1B-Chat-v1.0"))
    tokenizer.pad_token = tokenizer.eos_token   # pad = eos: samples end with the pad id and stay counted

    def sample(text):
        ids = tokenizer(text).input_ids + [tokenizer.eos_token_id]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": ids,
                "position_ids": list(range(len(ids)))}

    bins = [[sample("What is the capital of France?"), sample("Paris."), sample("Name a prime: 7")],
            [sample("A single short sample")]]
    lengths = sum(len(s["input_ids"]) for b in bins for s in b)
    batch = V2BatchSamplerDataCollatorForSeq2Seq(tokenizer, padding=True, pad_to_multiple_of=64,
                                                 return_tensors="pt")(copy.deepcopy(bins))
    assert batch["input_ids"].shape == (2, 64) and lengths < 128
    module = torch.nn.Linear(1, 1)

    def counted(pad_token_id, **kwargs):
        recorder = Recorder("unused", pad_token_id=pad_token_id)
        recorder.count(module, (), {"input_ids": batch["input_ids"], **kwargs})
        return recorder.tokens, recorder.slots

    assert counted(tokenizer.pad_token_id, position_ids=batch["position_ids"]) == (lengths, 128)
    assert counted(None, attention_mask=batch["attention_mask"]) == (lengths, 128)   # the mask, where kept
    assert counted(None, position_ids=batch["position_ids"]) == (128, 128)           # no pad id: every position


@pytest.mark.slow
def test_cpu_smoke_run_through_the_real_launcher(tmp_path, capsys):
    """`recipe gpu-check RECIPE --cpu`, the QA recipe with sample packing on: 3 real Axolotl steps; the token
    positions our hook counts equal the Trainer's own count, the packed rows' padding is not counted as
    tokens (Axolotl feeds no attention mask), the report is written as JSON and Markdown, and a second
    run needs --force."""
    from common import cli

    recipe = tmp_path / "packed.yml"
    recipe.write_text((ROOT / "recipes/tinyllama-qa/lora-1.1b.yml").read_text().replace(
        "\nsample_packing: false", "\nsample_packing: true"))
    out = tmp_path / "check"
    argv = ["gpu-check", str(recipe), "--cpu", "--steps", "3", "--warmup", "1", "--out", str(out)]
    assert cli.main(argv) == 0
    report = json.loads((out / "gpu_check.json").read_text())
    steps = [json.loads(line) for line in (out / "run" / "step_metrics.jsonl").read_text().splitlines()]
    assert report["steps"] == len(steps) == 3 and report["measured_steps"] == 2
    assert sum(s["slots"] for s in steps) == steps[-1]["trainer_tokens_seen"] > 0
    assert all(0 < s["tokens"] <= s["slots"] for s in steps) and any(s["tokens"] < s["slots"] for s in steps)
    assert report["sample_packing"] and 0.5 < report["packing_efficiency"] < 1
    assert report["tokens_per_s"] > 0 and report["mfu"] is None
    assert "| tokens_per_s |" in (out / "gpu_check.md").read_text()
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2 and "--force" in capsys.readouterr().err


def test_random_weights_model_loads_with_its_stand_ins_tokenizer(tmp_path, monkeypatch):
    """build_twin writes a model transformers loads at the real width (one layer here) with the
    stand-in's tokenizer and chat template, and reuses it on the next call."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from common.models import stand_in_for

    hub_id = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    monkeypatch.setattr(gpu_check, "CACHE", tmp_path)
    out = gpu_check.build_twin(hub_id, layers=1)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.hidden_size == memory.TINYLLAMA_1B.hidden and model.config.num_hidden_layers == 1
    assert model.dtype.is_floating_point and str(model.dtype) == "torch.bfloat16"
    ours, stand_in = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(stand_in_for(hub_id))
    assert ours.chat_template == stand_in.chat_template and ours("Hello there").input_ids == \
        stand_in("Hello there").input_ids
    assert gpu_check.build_twin(hub_id, layers=1) == out and not list(tmp_path.glob("**/*.tmp"))


def test_peft_engine_runs_the_recipes_shape_without_axolotl(tmp_path):
    """--engine peft (for a GPU machine without Axolotl): full rows of micro_batch_size x sequence_len,
    gradient_accumulation_steps of them per step, LoRA on the recipe's targets only."""
    run = Run.load(ROOT / "recipes/tinyllama-qa/lora-1.1b.yml")
    report = gpu_check.check(run.path, steps=2, warmup=1, out=tmp_path, cpu=True, engine="peft")
    cfg = run.cfg
    per_step = cfg["micro_batch_size"] * cfg["sequence_len"] * cfg["gradient_accumulation_steps"]
    assert report["engine"] == "peft" and report["steps"] == 2 and report["tokens_per_step"] == per_step
    assert report["packing_efficiency"] == 1.0 and report["tokens_per_s"] > 0
    assert report["flops_per_token"] > 0 and json.loads((tmp_path / "gpu_check.json").read_text()) == report
    assert report["trainable_params"] == report["trainable_params_estimate"] > 0  # PEFT's count = scripts.memory's


@pytest.mark.parametrize("cpu", [False, True])
def test_gpu_launch_keeps_the_hub_reachable(cpu, tmp_path, monkeypatch):
    """On a GPU, Axolotl's config check fetches the flash-attention kernel from the hub: the launch must not
    force HF_HUB_OFFLINE (the CPU smoke run is offline). A value the user set is kept either way."""
    from scripts import cpu_run

    seen = {}

    class Launched:
        def __init__(self, command, env, **_):
            seen.update(command=command, env=env)
            self.stdout = iter(())

        def wait(self):
            return 0

    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(cpu_run.subprocess, "Popen", Launched)
    assert gpu_check.launch(tmp_path / "config.yml", cpu, tmp_path / "train.log") == 0
    assert ("--cpu" in seen["command"]) == cpu
    assert (seen["env"].get("HF_HUB_OFFLINE") == "1") == cpu
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    gpu_check.launch(tmp_path / "config.yml", cpu, tmp_path / "train.log")
    assert seen["env"]["HF_HUB_OFFLINE"] == "1"
