"""Architectures beside Llama (issue 14 item 4): Qwen2, Phi-3 and Gemma 4 stand-ins built from llama.cpp's vocab GGUFs.

- The stand-in tokenizers tokenize llama.cpp's own test cases (the .inp/.out files beside each vocab GGUF)
  exactly as llama.cpp does; so does Phi-3's tokenizer.model, which llama.cpp's converter reads.
- End to end (slow): `recipe cp` a CPU recipe, change only base_model to the hub id, then `recipe check`
  (it passes; on Phi-3 it warns about the LoRA targets and the untrained end of turn, on Gemma 4 about the
  untrained end of turn (eos <eos>, turns end <turn|>), and the copy gets
  the fixes its warnings name, as a user would), `recipe train --cpu`, `recipe merge`, `recipe gguf`
  (llama.cpp's convert_hf_to_gguf.py for these architectures), load the GGUF in llama.cpp and generate,
  `recipe ollama`; the chat prompt llama.cpp, the Modelfile (Ollama) and transformers feed is the
  sequence Axolotl trained, token for token, as is what a real vLLM server serving the merged model feeds;
  and the trained span after it is the reply.
"""
import re
import shutil
from pathlib import Path

import pytest

from common import ROOT
from common.models import GEMMA4, PHI35, QWEN25, local_model, stand_in_for
from scripts.build_models import llama_cpp_dir

# name -> (hub id a user writes in base_model, stand-in, llama.cpp vocab GGUF, GGUF architecture)
ARCHS = {
    "qwen2": ("Qwen/Qwen2.5-0.5B-Instruct", QWEN25, "ggml-vocab-qwen2.gguf", "qwen2"),
    "phi3": ("microsoft/Phi-3-mini-4k-instruct", PHI35, "ggml-vocab-phi-3.gguf", "phi3"),
    "gemma": ("google/gemma-4-E2B-it", GEMMA4, "ggml-vocab-gemma-4.gguf", "gemma4"),
}
RECIPE = "recipes/llama3-character-chat/lora-135m.yml"  # CPU recipe, data in the repo, tokenizer_default
# what `recipe check` warns about on a copy (key in its warning -> the edit the warning names, made as a
# user would). Phi-3: its fused projections (the recipe's q/k/v/gate/up_proj do not exist there), and
# its template ends turns with <|end|> while eos_token is <|endoftext|>: without eot_tokens Axolotl
# trains no end of turn, only a lone <|endoftext|> after the last reply. Gemma 4 likewise: eos_token <eos>,
# turns end with <turn|>
FIXES = {
    "qwen2": {},
    "gemma": {"'datasets[0].train_on_eos'": ("eot_tokens", '["<turn|>"]')},
    "phi3": {"'lora_target_modules'": ("lora_target_modules", "[qkv_proj, o_proj, gate_up_proj, down_proj]"),
             "'datasets[0].train_on_eos'": ("eot_tokens", '["<|end|>"]')},
}


def stand_in(name):
    path = local_model(ARCHS[name][1])
    if not (path / "config.json").exists():
        pytest.fail(f"{path} is missing: run `python -m scripts.build_models {ARCHS[name][1]}`")
    return path


def llama_cpp_cases(vocab_file):
    """(text, token ids) of llama.cpp's tokenizer test for this vocab (tests/test-tokenizer-0)."""
    models = llama_cpp_dir() / "models"
    texts = (models / f"{vocab_file}.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    ids = (models / f"{vocab_file}.out").read_text(encoding="utf-8").split("\n")
    assert len(texts) >= 40
    return [(text, [int(i) for i in line.split()]) for text, line in zip(texts, ids)]


@pytest.mark.parametrize("name", list(ARCHS))
def test_hub_id_maps_to_the_stand_in(name):
    hub_id, model, _, _ = ARCHS[name]
    assert stand_in_for(hub_id) == local_model(model)


@pytest.mark.parametrize("name", list(ARCHS))
def test_stand_in_tokenizes_like_llama_cpp(name):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(stand_in(name))
    cases = llama_cpp_cases(ARCHS[name][2])
    wrong = [(text, want, got) for text, want in cases
             if (got := tok(text, add_special_tokens=False)["input_ids"]) != want]
    assert not wrong, f"{len(wrong)}/{len(cases)} cases differ, first: {wrong[0]}"
    if (stand_in(name) / "tokenizer.model").exists():  # what llama.cpp's converter reads for Phi-3
        import sentencepiece

        spm = sentencepiece.SentencePieceProcessor(model_file=str(stand_in(name) / "tokenizer.model"))
        assert [spm.encode(text) for text, _ in cases] == [want for _, want in cases]


def test_qwen_template_and_specials():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(stand_in("qwen2"))
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                    "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|im_end|>", "<|endoftext|>", None)
    assert tok("Hi")["input_ids"] == tok("Hi", add_special_tokens=False)["input_ids"]  # no bos


def test_phi3_template_and_specials():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(stand_in("phi3"))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|endoftext|>", "<|endoftext|>", "<s>")
    assert tok("Hi")["input_ids"] == tok("Hi", add_special_tokens=False)["input_ids"]  # no bos


def test_gemma_template_and_specials():
    """google/gemma-4-E2B-it's template: system turns, "model" turns, no empty thought block after the
    generation prompt (26B/31B's template writes one); <bos> written by the template; eos <eos>, turns end <turn|>."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(stand_in("gemma"))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<bos><|turn>system\nBe brief.<turn|>\n<|turn>user\nHi<turn|>\n<|turn>model\n"
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<eos>", "<pad>", "<bos>")
    assert tok("Hi")["input_ids"][0] == tok.bos_token_id  # Gemma's tokenizer adds bos to plain text
    assert tok.convert_tokens_to_ids(["<|turn>", "<turn|>"]) == [105, 106]
    assert all(t in tok.all_special_tokens for t in ("<|turn>", "<turn|>", "<|channel>"))  # CONTROL in GGUF


def set_key(path, key, value):
    """Set a top-level key of a recipe in its text (the line replaced, or one appended)."""
    text = path.read_text()
    changed, n = re.subn(rf"(?m)^{key}: .*$", f"{key}: {value}", text, count=1)
    path.write_text(changed if n else text.rstrip("\n") + f"\n{key}: {value}\n")


def test_phi3_gguf_tokenizes_the_chat_prompt_like_transformers(tmp_path):
    """Phi-3's tokenizer.json rstrips <|system|>, <|user|>, <|assistant|>, <|end|>: the "\n" the template
    writes after each is dropped (by transformers, so in what Axolotl trains). llama.cpp does the same only
    for a GGUF whose general.name says Phi-3; a fine-tune's folder ("merged") does not, so deploy.gguf
    names it."""
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    from deploy import gguf as export
    from tests.test_token_parity import CONVERSATIONS

    merged = tmp_path / "merged"  # a fine-tune's folder: convert_hf_to_gguf.py would name it "Merged"
    merged.mkdir()
    for item in stand_in("phi3").iterdir():
        (merged / item.name).symlink_to(item)
    path = export.export_model(merged, tmp_path / "model.gguf", "f16")
    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    tok = AutoTokenizer.from_pretrained(merged)
    for messages in CONVERSATIONS:
        text = tok.apply_chat_template(messages, tokenize=False)
        assert "<|user|>\n" in text
        want = tok(text, add_special_tokens=False)["input_ids"]
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == want
    assert llm.metadata["general.name"] == "Phi-3 merged"


def copy_with_base_model(tmp_path, folder, hub_id):
    """`recipe cp RECIPE DEST`, then only the base_model line changed, as a user does."""
    from common import cli

    dest = tmp_path / folder
    assert cli.main(["cp", RECIPE, str(dest)]) == 0
    copy = dest / Path(RECIPE).name
    assert re.search(r"(?m)^base_model: ", copy.read_text())
    set_key(copy, "base_model", hub_id)
    return copy


def check_warnings(capsys, copy):
    """`recipe check` on the copy: it passes; the fields its warnings name."""
    from common import cli

    assert not cli.main(["check", str(copy)])
    out = capsys.readouterr().out
    assert "1 of 1 recipe(s) ok" in out
    return {m.group(1) for m in re.finditer(r"(?m)^warning: .*? field ('[^']+')", out)}


def served_prompts_are_trained(merged, wants, asked, name, tmp_path):
    """vLLM serving the merged model feeds each chat the prefix Axolotl trained."""
    from deploy import vllm
    from deploy.vllm_server import Server, free_port, vllm_python
    from tests.test_token_parity import vllm_prompt_ids

    assert vllm_python(), "vLLM is not installed: scripts/setup.sh installs it into .cache/vllm"
    port = free_port()
    argv, _, _ = vllm.serve_argv(merged=str(merged), port=port, served_model_name="m", check=False,
                                 extra=["--max-model-len", "512", "--enforce-eager"])
    with Server(argv, tmp_path / "vllm.log", port=port, timeout=240) as server:
        for i, (want, messages) in enumerate(zip(wants, asked)):
            assert vllm_prompt_ids(server.base_url, "m", messages) == want, f"{name} conversation {i}: vLLM"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ARCHS))
def test_recipe_end_to_end(name, tmp_path, capsys):
    from llama_cpp import Llama

    from common import cli
    from common.run import Run
    from deploy import ollama
    from tests import ollama_go
    from tests.test_token_parity import (CONVERSATIONS, axolotl_tokenized, hf_prompt, last_reply_start,
                                         llama_cpp_prompts, prompts)

    hub_id, _, _, gguf_arch = ARCHS[name]
    stand_in(name)
    folder = f"arch-test-{name}"  # --cpu runs write to outputs/cpu_runs/<folder>/ (removed afterwards)
    copy = copy_with_base_model(tmp_path, folder, hub_id)
    run = Run.load(copy, cpu=True)
    shutil.rmtree(run.run_dir.parent, ignore_errors=True)
    try:
        fixes = FIXES[name]
        assert check_warnings(capsys, copy) == set(fixes)
        if fixes:  # the warnings' fixes, then check again: nothing left to warn about
            for key, value in fixes.values():
                set_key(copy, key, value)
            assert check_warnings(capsys, copy) == set()
        assert not cli.main(["train", str(copy), "--cpu", "--max-steps", "2"])
        assert (run.adapter_dir / "adapter_model.safetensors").exists()
        assert not cli.main(["merge", str(copy), "--cpu"])
        assert not cli.main(["gguf", str(copy), "--cpu", "--outtype", "f16"])
        assert not cli.main(["ollama", str(copy), "--cpu"])
        gguf_path, modelfile = run.gguf_path("f16"), run.modelfile

        llm = Llama(model_path=str(gguf_path), n_ctx=256, n_threads=2, verbose=False)
        assert llm.metadata["general.architecture"] == gguf_arch
        if name == "phi3":  # llama.cpp rstrips Phi-3's special tokens only under such a name (deploy/gguf.py)
            assert "phi-3" in llm.metadata["general.name"].lower()
        out = llm.create_completion("Hello", max_tokens=4, temperature=0.0)
        assert out["usage"]["completion_tokens"] >= 1
        del llm

        tokenizer, trained = axolotl_tokenized(copy, tmp_path)  # the copy's dataset entry, Axolotl's own strategy
        asked = [prompts(c) for c in CONVERSATIONS]
        # the recipe's Modelfile sets SYSTEM to the recipe's prompt (served when a request has none):
        # the conversation with its own system message must be fed as trained; the plain one is checked
        # with a Modelfile without SYSTEM, as tests/test_token_parity.py does
        assert "SYSTEM" in modelfile.read_text()
        _, with_system, _ = llama_cpp_prompts(gguf_path, modelfile.read_text(), asked[:1])
        if with_system[0] is not None:  # None: no Go here (skipped below)
            assert with_system[0] == trained[0]["input_ids"][:last_reply_start(trained[0])]
        plain, _ = ollama.build_modelfile(tmp_path / "Modelfile", run.merged_dir, gguf=gguf_path)
        chat, ollama_ids, _ = llama_cpp_prompts(gguf_path, plain, asked)
        for i, messages in enumerate(asked):
            start = last_reply_start(trained[i])
            want = trained[i]["input_ids"][:start]
            # the last trained span is the reply (and its turn end), not a lone eos after it
            reply = tokenizer.decode(trained[i]["input_ids"][start:], skip_special_tokens=True)
            assert reply.strip() == CONVERSATIONS[i][-1]["content"], f"{name}: the trained reply is {reply!r}"
            got = {"transformers": hf_prompt(run.merged_dir, messages), "llama.cpp": chat[i]}
            if ollama_ids[i] is not None:
                got["ollama"] = ollama_ids[i]
            for path, ids in got.items():
                assert ids == want, f"{name} conversation {i}: {path} feeds {ids}, trained {want}"
        served_prompts_are_trained(run.merged_dir, [t["input_ids"][:last_reply_start(t)] for t in trained],
                                   asked, name, tmp_path)
        ollama_go.binary()  # the Ollama path needs Go: skip (or fail where set-up installs it) without it
    finally:
        shutil.rmtree(run.run_dir.parent, ignore_errors=True)
