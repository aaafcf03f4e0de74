"""GGUF export, checked by llama.cpp itself (llama-cpp-python) against transformers."""
import numpy as np
import pytest
import torch
from llama_cpp import Llama
from transformers import AutoModelForCausalLM, AutoTokenizer

from common.errors import InputError
from deploy import gguf as export
from deploy.merge import merge
from tests.helpers import make_adapter

TEXT = "Hello world! Ça va? 3.14159 — naïve café\n\n  spaces\tand <|user|> 🦙 1234567"


def hf_logits(model_dir, ids):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def cpp_logits(path, ids, **kwargs):
    llm = Llama(model_path=str(path), n_ctx=128, logits_all=True, verbose=False, n_threads=2, **kwargs)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)]), llm


@pytest.mark.parametrize("name", ["tinyllama", "llama31"])
def test_stand_in_exports_f32_with_matching_logits_and_tokens(name, request, tmp_path):
    model_dir = request.getfixturevalue(name)
    out = export.export_model(model_dir, tmp_path / "m.gguf", "f32")
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    got, llm = cpp_logits(out, ids)
    np.testing.assert_allclose(got, hf_logits(model_dir, ids), atol=2e-3, rtol=1e-3)
    # llama.cpp tokenizes text exactly as the HF tokenizer does, special tokens included
    assert llm.tokenize(TEXT.encode(), add_bos=False, special=True) == ids
    assert llm.token_bos() == tok.bos_token_id
    assert llm.metadata["tokenizer.chat_template"] == tok.chat_template


def test_embedded_model_exports_f16_and_q8_0(tmp_path, smollm2):
    tok = AutoTokenizer.from_pretrained(smollm2)
    ids = tok("The capital of France is", add_special_tokens=False)["input_ids"]
    expected = hf_logits(smollm2, ids)
    f16 = export.export_model(smollm2, tmp_path / "m-f16.gguf", "f16")
    got, llm = cpp_logits(f16, ids)
    assert np.abs(got - expected).max() < 0.15
    assert llm.tokenize(TEXT.encode(), add_bos=False, special=True) == tok(TEXT, add_special_tokens=False)["input_ids"]
    assert llm.metadata["tokenizer.ggml.pre"] == "smollm"
    del llm
    q8 = export.export_model(smollm2, tmp_path / "m-q8.gguf", "q8_0")
    got, _ = cpp_logits(q8, ids)
    assert (got.argmax(-1) == expected.argmax(-1)).mean() >= 0.8
    assert q8.stat().st_size < f16.stat().st_size * 0.6


def test_k_quant_through_llama_cpp(tmp_path, tinyllama):
    out = export.export_model(tinyllama, tmp_path / "m-q4km.gguf", "q4_k_m")
    llm = Llama(model_path=str(out), n_ctx=64, verbose=False)
    assert llm.n_vocab() == 32000
    assert not list(tmp_path.glob(".tmp-*"))


def test_adapter_gguf_on_base_equals_merged(tmp_path, tinyllama):
    adapter = make_adapter(tinyllama, tmp_path / "adapter")
    merged = tmp_path / "merged"
    merge(tinyllama, adapter, merged, verify=False)
    base_gguf = export.export_model(tinyllama, tmp_path / "base.gguf", "f32")
    lora_gguf = export.export_adapter(adapter, tinyllama, tmp_path / "lora.gguf")
    ids = list(range(5, 30))
    with_lora, llm = cpp_logits(base_gguf, ids, lora_path=str(lora_gguf))
    expected = hf_logits(merged, ids)
    np.testing.assert_allclose(with_lora, expected, atol=5e-3, rtol=1e-3)
    assert np.abs(expected - hf_logits(tinyllama, ids)).max() > 1e-2  # the adapter matters


def test_unsupported_model_fails_before_writing(tmp_path, tinyllama):
    bad = tmp_path / "bad"
    bad.mkdir()
    config = (tinyllama / "config.json").read_text().replace('"LlamaForCausalLM"', '"GPT2LMHeadModel"')
    (bad / "config.json").write_text(config)
    with pytest.raises(InputError, match="architecture"):
        export.export_model(bad, tmp_path / "bad.gguf")
    assert not (tmp_path / "bad.gguf").exists()


def test_bf16_export_of_llama31_keeps_rope_freqs(tmp_path, llama31):
    out = export.export_model(llama31, tmp_path / "m-bf16.gguf", "bf16")
    tok = AutoTokenizer.from_pretrained(llama31)
    ids = tok("The lighthouse keeper lit the lamp at dusk.", add_special_tokens=False)["input_ids"]
    got, llm = cpp_logits(out, ids)
    expected = hf_logits(llama31, ids)
    assert (got.argmax(-1) == expected.argmax(-1)).mean() >= 0.9
    import gguf

    reader = gguf.GGUFReader(out)
    names = {t.name: t for t in reader.tensors}
    assert names["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.BF16
    factors = np.asarray(names["rope_freqs.weight"].data)
    assert factors.min() == 1.0 and factors.max() == 8.0  # Llama 3.1's high/low frequency factors
