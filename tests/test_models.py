"""The locally built models: the embedded SmolLM2 answers; stand-ins carry the real tokenizers and templates."""
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Name a colour."},
]


def test_embedded_model_answers_a_question(smollm2):
    tok = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
    assert model.config.num_hidden_layers == 30 and tok.eos_token == "<|im_end|>"


def test_smollm2_renders_chatml(smollm2):
    tok = AutoTokenizer.from_pretrained(smollm2)
    text = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
                    "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n"
                    "<|im_start|>assistant\n")


def test_tinyllama_stand_in_has_real_tokenizer_and_zephyr_template(tinyllama):
    tok = AutoTokenizer.from_pretrained(tinyllama)
    assert len(tok) == 32000 and (tok.bos_token, tok.eos_token, tok.unk_token) == ("<s>", "</s>", "<unk>")
    # ids of the real Llama 2 / TinyLlama SentencePiece vocabulary
    assert tok("Hello world", add_special_tokens=True)["input_ids"] == [1, 15043, 3186]
    text = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert text == ("<|system|>\nYou are terse.</s>\n<|user|>\nHi there</s>\n<|assistant|>\nHello.</s>\n"
                    "<|user|>\nName a colour.</s>\n<|assistant|>\n")
    model = AutoModelForCausalLM.from_pretrained(tinyllama)
    assert model.config.vocab_size == 32000 and model.config.num_hidden_layers <= 4


def test_llama31_stand_in_has_real_tokenizer_and_template(llama31):
    tok = AutoTokenizer.from_pretrained(llama31)
    assert len(tok) == 128256
    assert tok.convert_tokens_to_ids(["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>"]) == [128000, 128009, 128006]
    assert tok("Hello world", add_special_tokens=False)["input_ids"] == [9906, 1917]
    assert tok("\n\n", add_special_tokens=False)["input_ids"] == [271]
    text = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert "You are terse.<|eot_id|>" in text
    assert text.endswith("<|start_header_id|>user<|end_header_id|>\n\nName a colour.<|eot_id|>"
                         "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert tok.pad_token_id == 128004
    model = AutoModelForCausalLM.from_pretrained(llama31)
    assert model.config.vocab_size == 128256
    assert model.config.rope_parameters["rope_type"] == "llama3"
