"""Sample packing on CPU keeps samples apart (issue 16): Axolotl 0.19 drops the padding mask of packed rows
for sdpa/eager (`attn_decontaminates_packing`) and transformers builds a block-diagonal causal mask from
the position_ids that restart at each sample. Checked on what Axolotl itself feeds (tests/packing_check.py,
in its own process): a recipe through scripts.cpu_run's CPU config with `sample_packing: true`,
Axolotl's own datasets, model and trainer, one batch of its train dataloader. Every packed sample's
logits equal the sample's logits alone; the same row with a plain attention mask does not.
"""
import json
import subprocess
import sys

import yaml

from common import ROOT
from scripts import cpu_run

RECIPE = ROOT / "recipes/tinyllama-qa/lora-1.1b.yml"   # its stand-in: a tiny Llama


def test_packed_samples_do_not_see_each_other(tmp_path):
    cfg, _ = cpu_run.cpu_config(RECIPE, max_steps=2, output_dir=tmp_path / "run", validate=False)
    assert cfg["attn_implementation"] == "sdpa"    # the recipe's flash_attention_2, on CPU
    cfg.update(sample_packing=True, micro_batch_size=1, lora_dropout=0.0,
               dataset_prepared_path=str(tmp_path / "prepared"))
    (tmp_path / "config.yml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "packing.json"
    proc = subprocess.run([sys.executable, "-m", "tests.packing_check", str(tmp_path / "config.yml"), str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["decontaminates"]
    assert "attention_mask" not in result["keys"]  # Axolotl dropped it: position_ids mark the samples
    for attn, samples in result["samples"].items():   # sdpa, then eager
        assert len(samples) >= 3, f"one row packs several samples: {samples}"
        for i, sample in enumerate(samples):
            assert sample["packed"] < 1e-4, f"{attn}: packed sample {i} sees the samples before it: {sample}"
            if i:  # the control: with a plain mask, later samples attend to earlier ones
                assert sample["plain_mask"] > 1e-3, (attn, sample)
