"""The CPU run helper: overrides only what a CPU cannot do, and really trains with Axolotl."""
import json
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from common import ROOT, quiet
from common.errors import InputError, StepError
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
    assert cfg["flash_attention"] is False and cfg["sample_packing"] is True  # sdpa keeps samples apart
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


# lines that said nothing to a user (issue 15): none may reach the terminal
NOISE = ("_C_mxfp8", "_C_cutlass_90a", "kernels-community", "_pytree", "is an Enum subclass", "'pin_memory' argument",
         "not passed to `accelerate launch`", "VRAM instability", '"activation_offloading"', "Using chat template")


def assert_quiet_with_progress(terminal, steps=None):
    """No known noise line, the resolved config as a file, and one progress line per logging step."""
    noise = [line for line in terminal.splitlines() if any(n in line for n in NOISE)]
    assert not noise, noise
    total = re.search(r"^training: (\d+) steps", terminal, re.M)
    assert total and int(total.group(1)) == (steps or int(total.group(1))), terminal
    steps = int(total.group(1))
    assert re.search(rf"^step 1/{steps}  eta \d+:\d\d$", terminal, re.M), terminal
    assert re.search(rf"^step \d+/{steps}  epoch [0-9.]+  loss [0-9.]+  eta \d+:\d\d$", terminal, re.M), terminal
    assert re.search(rf"^trained {steps} steps in \d+:\d\d, train loss [0-9.]+$", terminal, re.M), terminal
    config = re.search(r"^resolved Axolotl config: (\S+)", terminal, re.M)
    assert config and json.loads(Path(config.group(1)).read_text())["adapter"] == "lora"


@pytest.mark.slow
def test_cpu_run_trains_a_recipe_quietly_and_writes_an_adapter(tmp_path, tinyllama):
    """The CLI as a user runs it (the quickstart's recipe, 5 steps): an adapter, progress, no noise."""
    data, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    records = [json.dumps({"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                                        {"role": "assistant", "content": f"{i + i}"}]}) + "\n" for i in range(20)]
    data.write_text("".join(records))
    val.write_text("".join(records[:4]))  # one batch: the val loss costs little time
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "RECIPES_VERBOSE"}
    proc = subprocess.run([sys.executable, "-m", "scripts.cpu_run", "recipes/quickstart/lora-135m.yml",
                           "--dataset", str(data), "--eval-dataset", str(val), "--max-steps", "5",
                           "--output-dir", str(out)], cwd=ROOT, env={**env, "TQDM_DISABLE": "1"},
                          capture_output=True, text=True, timeout=600)
    terminal = proc.stdout + proc.stderr
    assert proc.returncode == 0, terminal[-3000:]
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and set(adapter["target_modules"]) >= {"q_proj", "down_proj"}
    assert (out / "adapter_model.safetensors").stat().st_size > 0
    assert_quiet_with_progress(terminal, 5)
    assert len(terminal.splitlines()) < 30, terminal
    # the Trainer's metrics stay in train.log; Axolotl's full log (config dump included) in debug.log
    assert re.search(r"'train_loss': '?[0-9.]+", (out / "train.log").read_text())
    assert '"activation_offloading"' in (out / "debug.log").read_text()
    cfg = yaml.safe_load((out / "cpu_config.yml").read_text())
    assert cfg["max_steps"] == 5 and cfg["dataloader_pin_memory"] is False


SHAREGPT_WRONG_ROLES = {"conversations": [{"from": "system", "value": "You are Mira."},
                                          {"from": "user", "value": "Hi"}, {"from": "assistant", "value": "Hello."}]}


def test_data_with_unmapped_roles_stops_before_training(tmp_path, capsys):
    """ShareGPT roles the recipe does not map (it maps human/gpt): a clear error, no Axolotl launch."""
    data = tmp_path / "chats.jsonl"
    data.write_text(json.dumps({"conversations": [{"from": "human", "value": "Hi"},
                                                  {"from": "gpt", "value": "Hello."}]}) + "\n"
                    + json.dumps(SHAREGPT_WRONG_ROLES) + "\n")
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        cpu_run.main(["recipes/llama3-character-chat/lora-135m.yml", "--dataset", str(data),
                      "--output-dir", str(out), "--max-steps", "1"])
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    recipe_line = next(n for n, line in enumerate(Path("recipes/llama3-character-chat/lora-135m.yml")
                                                  .read_text().splitlines(), 1) if line.strip().startswith("roles:"))
    assert error.startswith(f"error: recipes/llama3-character-chat/lora-135m.yml:{recipe_line}: "
                            "field 'datasets[0].roles': role 'user' in "), error
    assert "chats.jsonl:2 is not mapped" in error and "stopped before training" in error
    assert not (out / "train.log").exists() and not (out / "debug.log").exists()


def test_a_failed_training_run_raises_and_the_cli_exits_1(tmp_path, monkeypatch, capsys):
    """run_recipe raises StepError (a library function, not SystemExit); the CLI prints it and exits 1."""
    monkeypatch.setattr(cpu_run, "train", lambda config, log: 3)  # Axolotl not started: its exit status
    recipe, out = "recipes/llama3-character-chat/lora-135m.yml", tmp_path / "run"
    with pytest.raises(StepError, match=f"cpu_run: axolotl exited with 3; see {out / 'train.log'}"):
        cpu_run.run_recipe(recipe, max_steps=1, output_dir=out, validate=False)
    with pytest.raises(SystemExit) as stop:
        cpu_run.main([recipe, "--output-dir", str(out), "--max-steps", "1", "--force"])
    assert stop.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"cpu_run: axolotl exited with 3; see {out / 'train.log'}"


def test_quickstart_checks_its_validation_data_too(tmp_path):
    """The quickstart's training step runs the same check, on the val file as well (named as such)."""
    from scripts import quickstart

    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
    (tmp_path / "train.jsonl").write_text(json.dumps(good) + "\n")
    (tmp_path / "val.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Hello."}]}) + "\n")
    with pytest.raises(InputError) as err:
        quickstart.train(tmp_path, tmp_path / "train.jsonl", 1)
    assert err.value.field == "test_datasets[0].roles" and "val.jsonl:2" in err.value.message
    assert err.value.line == next(n for n, line in enumerate(quickstart.RECIPE.read_text().splitlines(), 1)
                                  if line.startswith("test_datasets:")) + 1
    assert not (tmp_path / "adapter" / "train.log").exists()


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


def test_noise_filters_drop_only_the_known_messages(monkeypatch, caplog):
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet.quiet()
        warnings.warn("'pin_memory' argument is set as true but no accelerator is found, then device pinned "
                      "memory won't be used.", UserWarning)
        warnings.warn("'pin_memory' is not the start of the known message", UserWarning)
    assert [str(w.message) for w in seen] == ["'pin_memory' is not the start of the known message"]
    with caplog.at_level(logging.WARNING):
        logging.getLogger("torchao").warning("Failed to load /venv/torchao/_C_mxfp8.cpython-310.so: no such lib")
        logging.getLogger("torchao").warning("Failed to load /venv/torchao/_C_other.so: no such lib")
    assert [r.getMessage() for r in caplog.records] == ["Failed to load /venv/torchao/_C_other.so: no such lib"]
