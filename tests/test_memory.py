"""scripts.memory: estimates move the right way and land in sane ranges."""
import json

import pytest
import yaml

from common import ROOT
from scripts import memory

LORA_8B = ROOT / "recipes/llama3-character-chat/lora-8b.yml"
QLORA_8B = ROOT / "recipes/llama3-character-chat/qlora-8b.yml"


def cfg(path, **changes):
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    return data


def test_parameter_counts_match_the_real_models():
    assert memory.LLAMA31_8B.params() == pytest.approx(8.03e9, rel=0.01)
    assert memory.TINYLLAMA_1B.params() == pytest.approx(1.10e9, rel=0.01)


def test_local_model_dirs_are_read_from_config_json(smollm2):
    arch = memory.arch_for(smollm2)
    assert arch.params() == memory.SMOLLM2_135M.params() == pytest.approx(134.5e6, rel=0.01)


def test_qlora_needs_less_than_16_bit_lora():
    lora, qlora = memory.estimate(cfg(LORA_8B)), memory.estimate(cfg(QLORA_8B))
    assert qlora["total_gib"] < lora["total_gib"]
    weights = lambda r: next(v for k, v in r["components_gib"].items() if k.startswith("base weights"))  # noqa: E731
    assert 4.5 < weights(qlora) < 6.5 and 14.5 < weights(lora) < 15.5   # ~0.52 vs 2 bytes/param


def test_gradient_checkpointing_reduces_activations():
    on = memory.estimate(cfg(LORA_8B, gradient_checkpointing=True))
    off = memory.estimate(cfg(LORA_8B, gradient_checkpointing=False))
    act = lambda r: next(v for k, v in r["components_gib"].items() if k.startswith("activations"))  # noqa: E731
    assert act(on) < act(off) / 5
    assert on["total_gib"] < off["total_gib"]


def test_more_tokens_more_memory_and_dropout_costs_activations():
    base = memory.estimate(cfg(LORA_8B))
    assert memory.estimate(cfg(LORA_8B), sequence_len=4096)["total_gib"] > base["total_gib"]
    assert memory.estimate(cfg(LORA_8B), micro_batch_size=2)["total_gib"] > base["total_gib"]
    assert memory.estimate(cfg(LORA_8B, lora_dropout=0.0))["total_gib"] < base["total_gib"]


def test_8b_bf16_lora_fits_80_not_16():
    total = memory.estimate(cfg(LORA_8B))["total_gib"]
    assert not memory.fits(total, 16) and memory.fits(total, memory.GPUS["h100"] / 1024)
    assert memory.fits(memory.estimate(cfg(QLORA_8B))["total_gib"], 24)


def test_sharding_lowers_the_per_gpu_figure():
    single = memory.estimate(cfg(LORA_8B))["total_gib"]
    zero2 = memory.estimate(cfg(ROOT / "recipes/llama3-character-chat/lora-8b-zero2.yml"))
    zero3 = memory.estimate(cfg(ROOT / "recipes/llama3-character-chat/lora-8b-zero3.yml"))
    fsdp = memory.estimate(cfg(ROOT / "recipes/llama3-character-chat/lora-8b-fsdp.yml"))
    assert zero2["distributed"] == "zero2" and zero3["distributed"] == "zero3" and fsdp["distributed"] == "fsdp"
    assert zero3["total_gib"] < zero2["total_gib"] <= single
    assert zero3["total_gib"] < memory.estimate(cfg(ROOT / "recipes/llama3-character-chat/lora-8b-zero3.yml"),
                                                num_gpus=2)["total_gib"]
    assert fsdp["gradient_checkpointing"]  # FSDP's activation_checkpointing counts


def test_tinyllama_recipes_are_small():
    for recipe in ("tinyllama-qa/qlora-1.1b.yml", "tinyllama-qa/lora-1.1b.yml", "tinyllama-rpg/lora-1.1b.yml",
                   "tinyllama-discord-persona/qlora-1.1b.yml", "tinyllama-alpaca/lora-8bit-1.1b.yml"):
        total = memory.estimate(cfg(ROOT / "recipes" / recipe))["total_gib"]
        assert 1.5 < total < memory.GPUS["t4"] / 1024, recipe


def test_cli_prints_a_table(capsys):
    memory.main([str(QLORA_8B), "--gpu", "rtx4090"])
    out = capsys.readouterr().out
    assert "component" in out and "base weights (4-bit NF4)" in out and "total (estimate)" in out
    assert "rtx4090" in out and "fits" in out and "does NOT fit" not in out
    memory.main([str(LORA_8B), "--gpu-gb", "16"])
    assert "does NOT fit" in capsys.readouterr().out


def test_cli_json(capsys):
    memory.main([str(LORA_8B), "--gpu", "h100", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["fits"] is True and data["gpu"] == "h100" and data["total_gib"] > 16
    # r * (in + out) per module: q, o 4096+4096; k, v 4096+1024; gate, up, down 4096+14336; 32 layers, r 16
    assert data["trainable_params"] == 32 * 16 * (2 * 8192 + 2 * 5120 + 3 * 18432)


@pytest.mark.parametrize("recipe", sorted(p.relative_to(ROOT).as_posix()
                                          for p in (ROOT / "recipes").glob("*/*.yml") if p.parent.name != "quickstart"))
def test_readme_figure_matches_the_estimate(recipe):
    """Each README's table row for a recipe states the estimate (~X GiB) scripts.memory prints."""
    import re

    readme = (ROOT / recipe).parent / "README.md"
    name = recipe.rsplit("/", 1)[1]
    row = next(line for line in readme.read_text().splitlines() if line.startswith(f"| `{name}`"))
    stated = float(re.search(r"~([0-9.]+) GiB", row).group(1))
    assert stated == pytest.approx(memory.estimate(cfg(ROOT / recipe))["total_gib"], abs=0.06)
