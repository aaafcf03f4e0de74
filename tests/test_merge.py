"""Streaming LoRA merge: equals PEFT, works across shards, refuses what it cannot merge before writing."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from common.errors import InputError
from deploy import merge
from tests.helpers import make_adapter


def test_merge_equals_peft_across_shards(tmp_path, sharded_base):
    adapter = make_adapter(sharded_base, tmp_path / "adapter")
    report = merge.merge(sharded_base, adapter, tmp_path / "merged", verify=True)
    assert report["max_abs_logit_diff"] < 1e-3 and report["argmax_agree"]
    assert sorted(p.name for p in (tmp_path / "merged").glob("model-*.safetensors")) == \
        sorted(p.name for p in sharded_base.glob("model-*.safetensors"))
    assert (tmp_path / "merged" / "tokenizer.json").exists()
    assert (tmp_path / "merged" / "chat_template.jinja").exists()
    with pytest.raises(FileExistsError):
        merge.merge(sharded_base, adapter, tmp_path / "merged")


def test_merge_changes_the_model(tmp_path, tinyllama):
    adapter = make_adapter(tinyllama, tmp_path / "adapter", targets=("q_proj", "v_proj"), use_rslora=True)
    merge.merge(tinyllama, adapter, tmp_path / "merged", verify=True)
    ids = torch.arange(10).unsqueeze(0)
    base = AutoModelForCausalLM.from_pretrained(tinyllama)(ids).logits
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")(ids).logits
    assert (base - merged).abs().max() > 1e-3


def test_merge_refuses_dora_and_modules_to_save(tmp_path, tinyllama):
    dora = make_adapter(tinyllama, tmp_path / "dora", targets=("q_proj",), use_dora=True)
    with pytest.raises(InputError, match="use_dora"):
        merge.merge(tinyllama, dora, tmp_path / "out")
    saved = make_adapter(tinyllama, tmp_path / "mts", targets=("q_proj",), modules_to_save=["lm_head"])
    with pytest.raises(InputError, match="modules_to_save"):
        merge.merge(tinyllama, saved, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_merge_refuses_mismatched_base_before_writing(tmp_path, tinyllama, smollm2):
    other_model = make_adapter(smollm2, tmp_path / "adapter", targets=("q_proj",), r=4)
    with pytest.raises(InputError, match="has no weights for 28 adapted modules"):
        merge.merge(tinyllama, other_model, tmp_path / "out")
    reshaped = make_adapter(tinyllama, tmp_path / "reshaped", targets=("q_proj",), r=4)
    weights = reshaped / "adapter_model.safetensors"
    tensors = load_file(weights)
    key = next(k for k in tensors if "lora_A" in k)
    tensors[key] = torch.zeros(4, 32)
    save_file(tensors, weights)
    with pytest.raises(InputError, match="does not match base weight 64x64"):
        merge.merge(tinyllama, reshaped, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_merge_rejects_truncated_safetensors(tmp_path, tinyllama):
    adapter = make_adapter(tinyllama, tmp_path / "adapter", targets=("q_proj",))
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(InputError, match="safetensors"):
        merge.merge(tinyllama, adapter, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_merge_cli_reports_errors_in_one_line(tmp_path, tinyllama, capsys):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{not json")
    with pytest.raises(SystemExit) as exit_:
        merge.main(["--base", str(tinyllama), "--adapter", str(tmp_path / "adapter"), "-o", str(tmp_path / "o")])
    assert exit_.value.code == 2
    assert "adapter_config.json:1" in capsys.readouterr().err
