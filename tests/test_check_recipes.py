"""scripts.check_recipes: every shipped recipe passes; broken copies fail naming the file and the key."""
import re

import pytest
import yaml

from common import ROOT
from scripts import check_recipes

SHIPPED = [p.relative_to(ROOT).as_posix() for p in check_recipes.default_recipes()]
QA = ROOT / "recipes/tinyllama-qa/qlora-1.1b.yml"
CHARACTER = ROOT / "recipes/llama3-character-chat/lora-8b.yml"


@pytest.mark.parametrize("recipe", SHIPPED)
def test_shipped_recipe_passes(recipe):
    report = check_recipes.check_recipe(ROOT / recipe)
    assert report.ok, "\n".join(map(str, report.errors))


def test_qlora_recipe_warns_about_merging():
    report = check_recipes.check_recipe(QA)
    assert any("unquantized" in str(w) and "'adapter'" in str(w) for w in report.warnings)


def _broken(tmp_path, source, edit, name="broken.yml"):
    """A copy of a shipped recipe with one edit; the YAML text is edited so line numbers stay real."""
    cfg = yaml.safe_load(source.read_text())
    edit(cfg)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _errors(path):
    report = check_recipes.check_recipe(path)
    assert not report.ok
    return [str(e) for e in report.errors]


def test_unedited_copy_passes(tmp_path):
    # the broken copies below fail only because of their one edit
    assert check_recipes.check_recipe(_broken(tmp_path, QA, lambda c: None)).ok


def test_typo_in_a_key(tmp_path):
    path = _broken(tmp_path, QA, lambda c: c.update(lora_alhpa=c.pop("lora_alpha")))
    errors = _errors(path)
    assert any(str(path) in e and "'lora_alhpa'" in e and "did you mean 'lora_alpha'" in e for e in errors)


def test_typo_in_a_dataset_key(tmp_path):
    def edit(cfg):
        cfg["datasets"][0]["feild_messages"] = cfg["datasets"][0].pop("field_messages")
    errors = _errors(_broken(tmp_path, QA, edit))
    assert any("datasets[0].feild_messages" in e and "field_messages" in e for e in errors)


def test_missing_dataset_file(tmp_path):
    path = _broken(tmp_path, QA, lambda c: c["datasets"][0].update(path="recipes/tinyllama-qa/data/nope.jsonl"))
    errors = _errors(path)
    assert any(str(path) in e and "'datasets[0].path'" in e and "nope.jsonl: no such file" in e for e in errors)


def test_wrong_field_mapping(tmp_path):
    errors = _errors(_broken(tmp_path, QA, lambda c: c["datasets"][0].update(field_messages="conversations")))
    assert any("'datasets[0].field_messages'" in e and "'conversations' not found" in e for e in errors)
    # ShareGPT data read without its from/value mappings
    errors = _errors(_broken(tmp_path, CHARACTER, lambda c: c["datasets"][0].pop("message_property_mappings")))
    assert any("'datasets[0].message_property_mappings.role'" in e and "'role'" in e for e in errors)


def test_unknown_role(tmp_path):
    errors = _errors(_broken(tmp_path, CHARACTER, lambda c: c["datasets"][0].update(
        roles={"user": ["human"], "assistant": ["gpt"]})))
    assert any("'datasets[0].roles'" in e and "'system'" in e for e in errors)


def test_modules_to_save(tmp_path):
    path = _broken(tmp_path, QA, lambda c: c.update(lora_modules_to_save=["embed_tokens", "lm_head"]))
    assert any(str(path) in e and "'lora_modules_to_save'" in e and "vLLM" in e for e in _errors(path))


def test_rank_vllm_cannot_serve(tmp_path):
    path = _broken(tmp_path, QA, lambda c: c.update(lora_r=600))
    assert any(str(path) in e and "'lora_r'" in e and "600" in e for e in _errors(path))


def test_added_tokens_and_dora(tmp_path):
    errors = _errors(_broken(tmp_path, QA, lambda c: c.update(
        special_tokens={"additional_special_tokens": ["<|persona|>"]}, peft_use_dora=True)))
    assert any("'special_tokens.additional_special_tokens'" in e for e in errors)
    assert any("'peft_use_dora'" in e and "DoRA" in e for e in errors)


def test_axolotl_validation_errors_are_reported(tmp_path):
    errors = _errors(_broken(tmp_path, QA, lambda c: c["datasets"][0].update(train_on_eos="sometimes")))
    assert any("Axolotl rejects the dataset" in e and "'datasets[0].train_on_eos'" in e for e in errors)
    errors = _errors(_broken(tmp_path, QA, lambda c: c.update(warmup_steps=10)))   # with warmup_ratio
    assert any("Axolotl rejects the config" in e and "warmup" in e for e in errors)


def test_missing_deepspeed_file_and_fsdp_mismatch(tmp_path):
    zero2 = ROOT / "recipes/llama3-character-chat/lora-8b-zero2.yml"
    path = _broken(tmp_path, zero2, lambda c: c.update(deepspeed="recipes/llama3-character-chat/deepspeed/zero9.json"))
    assert any("'deepspeed'" in e and "zero9.json: no such file" in e for e in _errors(path))
    # an FSDP recipe whose settings disagree with the accelerate config next to it
    recipe_dir = tmp_path / "recipe"
    (recipe_dir / "accelerate").mkdir(parents=True)
    acc = yaml.safe_load((ROOT / "recipes/llama3-character-chat/accelerate/fsdp.yaml").read_text())
    acc["fsdp_config"]["fsdp_state_dict_type"] = "SHARDED_STATE_DICT"
    (recipe_dir / "accelerate" / "fsdp.yaml").write_text(yaml.safe_dump(acc))
    fsdp = _broken(recipe_dir, ROOT / "recipes/llama3-character-chat/lora-8b-fsdp.yml", lambda c: None)
    assert any("'fsdp_config.state_dict_type'" in e and "fsdp.yaml" in e for e in _errors(fsdp))


def test_cli_exit_status_and_output(tmp_path, capsys):
    good = str(ROOT / "recipes/tinyllama-rpg/lora-1.1b.yml")
    check_recipes.main([good, "--quiet"])
    assert "ok: " in capsys.readouterr().out
    bad = _broken(tmp_path, QA, lambda c: c.update(lora_r=600))
    with pytest.raises(SystemExit) as exit_info:
        check_recipes.main([str(bad)])
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert f"error: {bad}:" in out and "field 'lora_r'" in out and "0 of 1 recipe(s) ok" in out


def test_discord_wandb_switch_is_valid_when_uncommented(tmp_path):
    text = (ROOT / "recipes/tinyllama-discord-persona/qlora-1.1b.yml").read_text()
    assert "# wandb_project: discord-persona" in text
    enabled = tmp_path / "wandb.yml"
    enabled.write_text(text.replace("# wandb_", "wandb_"))
    assert yaml.safe_load(enabled.read_text())["wandb_project"] == "discord-persona"
    assert check_recipes.check_recipe(enabled).ok


def test_shipped_gpu_recipes_train_enough_steps():
    """Axolotl's own count on the shipped data: unpacked, batch 4 over 176 questions x 5 epochs."""
    report = check_recipes.check_recipe(QA)
    steps = report.steps
    assert steps["optimizer_steps"] == 220 and steps["sample_packing"] is False and steps["batch"] == 4
    assert steps["samples_per_step"] == 4.0 and steps["warmup_steps"] == 11   # int(0.05 x 220)
    assert 100 < steps["tokens_per_step"] < 1000


def test_packing_collapses_the_steps_and_fails_the_floor(tmp_path):
    """Packed, the 50 conversations x 3 epochs fit in ~3 optimizer steps (Axolotl bins
    micro_batch_size x sequence_len tokens per micro batch): below the floor, naming the file and key."""
    packed = _broken(tmp_path, CHARACTER, lambda c: c.update(sample_packing=True, gradient_accumulation_steps=8))
    report = check_recipes.check_recipe(packed)
    assert report.steps["sample_packing"] and report.steps["optimizer_steps"] < 6
    assert report.steps["packing_efficiency"] > 0.5 and report.steps["samples_per_step"] > 10
    errors = [str(e) for e in report.errors]
    assert any(str(packed) in e and "'num_epochs'" in e and "optimizer step(s)" in e and "floor 20" in e
               for e in errors)
    commented = tmp_path / "commented.yml"      # a recipe lowers its own floor (the CLI flag: test below)
    commented.write_text("# check_recipes: min_steps 2 (a demo)\n" + packed.read_text())
    assert check_recipes.check_recipe(commented).ok


def test_cli_prints_the_steps(tmp_path, capsys):
    check_recipes.main([str(ROOT / "recipes/tinyllama-rpg/lora-1.1b.yml")])
    out = capsys.readouterr().out
    assert "182 optimizer steps (290 samples x 5.0 epochs, batch 8, unpacked)" in out
    assert "tokens per step" in out and "9 warm-up steps" in out
    packed = _broken(tmp_path, ROOT / "recipes/tinyllama-rpg/lora-1.1b.yml", lambda c: c.update(sample_packing=True, gradient_accumulation_steps=8))
    with pytest.raises(SystemExit):
        check_recipes.main([str(packed)])
    assert "packed at" in capsys.readouterr().out
    check_recipes.main([str(packed), "--min-steps", "5"])
    assert "1 of 1 recipe(s) ok" in capsys.readouterr().out


# --- LoRA targets vs the base model's architecture, and the end of turn Axolotl trains -----------------

CPU_CHARACTER = ROOT / "recipes/llama3-character-chat/lora-135m.yml"   # SmolLM2 (Llama), chat_template
PHI3 = "microsoft/Phi-3-mini-4k-instruct"                               # the Phi-3.5-mini stand-in
PHI3_TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]


def _warnings(report, field):
    return [str(w) for w in report.warnings if f"field '{field}'" in str(w)]


def _line(path, key):
    return next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text.startswith(f"{key}:"))


def test_phi3_copy_warns_about_targets_its_architecture_lacks(tmp_path):
    """The recipe's Llama projections on Phi-3, which fuses q/k/v and gate/up: LoRA would adapt only
    o_proj and down_proj. A warning (some targets exist), naming the file, the line, the missing names
    and the model's own linear layers (built from the stand-in's config on the meta device)."""
    path = _broken(tmp_path, CPU_CHARACTER, lambda c: c.update(base_model=PHI3))
    report = check_recipes.check_recipe(path)
    assert report.ok, report.errors
    (warning,) = _warnings(report, "lora_target_modules")
    assert warning.startswith(f"{path}:{_line(path, 'lora_target_modules')}: ")
    missing, _, real = warning.partition(" not in Phi3ForCausalLM")
    assert missing.endswith("q_proj, k_proj, v_proj, gate_proj, up_proj") and "o_proj" not in missing
    assert all(name in real for name in PHI3_TARGETS)


def test_llama_recipes_and_target_linear_do_not_warn(tmp_path):
    for recipe in (CPU_CHARACTER, CHARACTER):  # SmolLM2's own dir; Llama 3.1's hub id -> its stand-in
        report = check_recipes.check_recipe(recipe)
        assert report.ok and not _warnings(report, "lora_target_modules"), report.warnings
    def linear(cfg):
        cfg.update(base_model=PHI3, lora_target_linear=True)
        cfg.pop("lora_target_modules")
    report = check_recipes.check_recipe(_broken(tmp_path, CPU_CHARACTER, linear))
    assert report.ok and not _warnings(report, "lora_target_modules"), report.warnings


def test_no_target_in_the_architecture_fails(tmp_path):
    path = _broken(tmp_path, CPU_CHARACTER, lambda c: c.update(lora_target_modules=["query", "value"]))
    errors = _errors(path)
    assert any(e.startswith(f"{path}:{_line(path, 'lora_target_modules')}: ") and "no module of LlamaForCausalLM"
               in e and "query, value" in e and "q_proj, k_proj, v_proj, o_proj" in e for e in errors)


def test_phi3_copy_warns_that_no_end_of_turn_is_trained(tmp_path):
    """Phi-3's template closes turns with <|end|>; its eos_token <|endoftext|> comes once, after the last
    turn. Without eot_tokens Axolotl trains only that lone <|endoftext|>: the warning names the fix, and
    with it (and Phi-3's own projection names, which vLLM serves) nothing is left to warn about."""
    path = _broken(tmp_path, CPU_CHARACTER, lambda c: c.update(base_model=PHI3))
    (warning,) = _warnings(check_recipes.check_recipe(path), "datasets[0].train_on_eos")
    assert "'<|end|>'" in warning and "'<|endoftext|>'" in warning
    assert 'eot_tokens: ["<|end|>"]' in warning
    fixed = _broken(tmp_path, CPU_CHARACTER, lambda c: c.update(
        base_model=PHI3, lora_target_modules=PHI3_TARGETS, eot_tokens=["<|end|>"]), name="fixed.yml")
    report = check_recipes.check_recipe(fixed)
    assert report.ok and not report.warnings, report.warnings + report.errors
    # templates whose turn end is the eos token (SmolLM2's <|im_end|>) get no such warning
    assert not _warnings(check_recipes.check_recipe(CPU_CHARACTER), "datasets[0].train_on_eos")


STEPS_LINE = re.compile(r"^steps: (\S+): (~?)(\d+) optimizer steps", re.MULTILINE)
SIZED_READMES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "recipes").glob("*/README.md")
                       if "--records" in p.read_text())


@pytest.mark.parametrize("readme", SIZED_READMES)
def test_readme_step_counts_are_what_check_prints(readme, capsys):
    """Each recipe README's step counts, on the shipped data and at a realistic size, are what
    `recipe check RECIPE --records N` prints (the README names the command)."""
    assert len(SIZED_READMES) == 5    # every GPU use case states its real-size steps
    text = " ".join((ROOT / readme).read_text().split())
    shipped = int(re.search(r"= (\d+) optimizer steps", text).group(1))
    recipe, records, about, at_size = re.search(r"`recipe check (\S+) --records (\d+)`\) the recipe makes "
                                                r"(about )?([\d,]+) steps", text).groups()
    check_recipes.main([recipe, "--records", records])
    printed = STEPS_LINE.findall(capsys.readouterr().out)
    assert [(r, tilde) for r, tilde, _ in printed] == [(recipe, ""), (recipe, "~")]
    assert int(printed[0][2]) == shipped
    expected, counted = int(at_size.replace(",", "")), int(printed[1][2])
    assert abs(counted - expected) <= (0.01 * expected if about else 0), (counted, expected)


def test_records_must_be_positive(capsys):
    with pytest.raises(SystemExit) as exit_info:
        check_recipes.main([str(QA), "--records", "0"])
    assert exit_info.value.code == 2 and "--records must be at least 1" in capsys.readouterr().err
