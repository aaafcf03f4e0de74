"""The CPU run helper: overrides only what a CPU cannot do, and really trains with Axolotl."""
import json
import re
from pathlib import Path

import pytest
import yaml

from common.errors import InputError
from scripts import cpu_run

GPU_RECIPE = {
    "base_model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    "load_in_4bit": True, "adapter": "qlora", "bf16": "auto", "flash_attention": True, "attn_implementation": "flash_attention_2",
    "sample_packing": True, "optimizer": "paged_adamw_8bit", "deepspeed": "deepspeed_configs/zero2.json",
    "wandb_project": "x", "lora_r": 16, "lora_alpha": 32, "lora_target_modules": ["q_proj", "v_proj"],
    "datasets": [{"path": "data/train.jsonl", "type": "chat_template", "field_messages": "conversations"}],
    "chat_template": "tokenizer_default", "sequence_len": 512,
}


def test_cpu_config_overrides_only_what_a_cpu_cannot_do(tmp_path, tinyllama):
    recipe = tmp_path / "qlora-1.1b.yml"
    recipe.write_text(yaml.safe_dump(GPU_RECIPE))
    (tmp_path / "d.jsonl").write_text("")
    cfg, changes = cpu_run.cpu_config(recipe, dataset=tmp_path / "d.jsonl", max_steps=3)
    assert cfg["base_model"] == str(tinyllama)
    assert (cfg["adapter"], cfg["load_in_4bit"], cfg["bf16"], cfg["fp16"]) == ("lora", False, False, False)
    assert cfg["flash_attention"] is False and cfg["sample_packing"] is False
    assert cfg["attn_implementation"] == "sdpa"
    assert cfg["optimizer"] == "adamw_torch" and cfg["max_steps"] == 3
    assert "deepspeed" not in cfg and "wandb_project" not in cfg
    assert cfg["lora_mlp_kernel"] is cfg["lora_qkv_kernel"] is cfg["lora_o_kernel"] is False
    # the recipe's own data format, template and LoRA settings stay as written
    assert cfg["datasets"][0]["field_messages"] == "conversations"
    assert cfg["datasets"][0]["path"] == str((tmp_path / "d.jsonl").resolve())
    assert (cfg["lora_r"], cfg["lora_alpha"], cfg["chat_template"]) == (16, 32, "tokenizer_default")
    assert any(c.startswith("adapter:") for c in changes)


def test_cpu_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("base_model: x\ndatasets: [unclosed\n")
    with pytest.raises(InputError, match="bad.yml:"):
        cpu_run.cpu_config(bad)
    unknown = tmp_path / "unknown.yml"
    unknown.write_text("base_model: some/unknown-model\n")
    with pytest.raises(InputError, match="base_model"):
        cpu_run.cpu_config(unknown)


@pytest.mark.slow
def test_cpu_run_trains_a_recipe_and_writes_an_adapter(tmp_path, tinyllama):
    data = tmp_path / "train.jsonl"
    with data.open("w") as fh:
        for i in range(8):
            fh.write(json.dumps({"messages": [
                {"role": "user", "content": f"What is {i} plus {i}?"},
                {"role": "assistant", "content": f"{i + i}"}]}) + "\n")
    recipe = Path("recipes/quickstart/lora-135m.yml")
    out = cpu_run.run_recipe(recipe, dataset=data, eval_dataset=data, max_steps=2, output_dir=tmp_path / "run")
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and set(adapter["target_modules"]) >= {"q_proj", "down_proj"}
    assert (out / "adapter_model.safetensors").stat().st_size > 0
    log = (out / "train.log").read_text()
    assert re.search(r"'train_loss': '?[0-9.]+", log)
    assert yaml.safe_load((out / "cpu_config.yml").read_text())["max_steps"] == 2


def test_missing_validation_file_is_named_before_axolotl_starts(tmp_path):
    recipe = yaml.safe_load(Path("recipes/quickstart/lora-135m.yml").read_text())
    recipe["test_datasets"][0]["path"] = str(tmp_path / "gone" / "val.jsonl")
    path = tmp_path / "lora-135m.yml"
    path.write_text(yaml.safe_dump(recipe))
    data = Path("recipes/tinyllama-qa/data/train.messages.jsonl")
    with pytest.raises(InputError) as err:
        cpu_run.cpu_config(path, dataset=data)
    assert err.value.field == "test_datasets[0].path" and "--eval-dataset" in str(err.value)
    cfg, changes = cpu_run.cpu_config(path, dataset=data, validate=False)
    assert "test_datasets" not in cfg and cfg["eval_strategy"] == "no" and "test_datasets: dropped" in changes
