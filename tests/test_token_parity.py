"""Train/serve token parity: the same conversations through every path, compared as token ids.

For each recipe base model (TinyLlama-1.1B-Chat, Llama-3.1-8B-Instruct, SmolLM2-135M-Instruct; their
local stand-ins carry the real tokenizers and templates) a conversation is tokenized
- as Axolotl trains it (the recipe's own dataset entry, Axolotl's prompt strategy in-process);
- for generation by `transformers` (apply_chat_template(add_generation_prompt=True));
- by llama.cpp from the exported GGUF (llama_cpp's chat completion: the GGUF's template and BOS);
- by Ollama from the Modelfile deploy.ollama writes (TEMPLATE executed by Go's text/template as Ollama's
  server runs it, tests/ollama_go.py, then tokenized as Ollama's llama-server runner does: BOS from
  tokenizer.ggml.add_bos_token, llm/llama_server.go; where Go is missing this path is skipped, after the others);
- by a real vLLM server's chat endpoint (prompt token ids; slow).
Every serving path must feed exactly the trained sequence up to the final assistant reply, and the
trained reply must start right there.

The served model is the stand-in with the tokenizer Axolotl trained with (saved next to the adapter).
"""
import copy
import json
import urllib.request
from pathlib import Path

import pytest
import yaml

from common import ROOT
from common.io import write_jsonl
from deploy import gguf as export
from deploy import ollama
from scripts import cpu_run
from scripts.check_recipes import quiet_datasets
from tests import ollama_go

# base model -> the recipe whose training is checked (its base model's stand-in is used)
RECIPES = {
    "tinyllama": "recipes/tinyllama-qa/lora-1.1b.yml",
    "llama31": "recipes/llama3-character-chat/lora-8b.yml",
    "smollm2": "recipes/tinyllama-rpg/lora-135m.yml",
}
CONVERSATIONS = [
    [{"role": "system", "content": "You are Vex, a terse ship's captain."},
     {"role": "user", "content": "How many crates are left? Answer in 2 words."},
     {"role": "assistant", "content": "Forty-two. 🦜"}],
    [{"role": "user", "content": "Ça marche ? Roll 3d6+2."},
     {"role": "assistant", "content": "Rolled 4, 5, 1: total 12."},
     {"role": "user", "content": "And the loot\nfrom chest #7?"},
     {"role": "assistant", "content": "A rusty key and 30 gold."}],
]


def _record(ds, messages):
    """One record in the recipe dataset's own format (field_messages, property mappings, role names)."""
    props = ds.get("message_property_mappings") or {"role": "role", "content": "content"}
    names = {dst: srcs[0] for dst, srcs in (ds.get("roles") or {}).items()}
    return {ds.get("field_messages", "messages"): [
        {props["role"]: names.get(m["role"], m["role"]), props["content"]: m["content"]} for m in messages]}


def axolotl_tokenized(recipe, tmp_path):
    """(tokenizer Axolotl trains with, [{input_ids, labels}] per conversation): the recipe's first dataset
    entry tokenized by Axolotl's own prompt strategy, as its preprocess does, on a tiny file."""
    import datasets
    import torch
    from axolotl.loaders.tokenizer import load_tokenizer
    from axolotl.utils.config import normalize_cfg_datasets, normalize_config, validate_config
    from axolotl.utils.data.wrappers import get_dataset_wrapper
    from axolotl.utils.dict import DictDefault

    ds = yaml.safe_load((ROOT / recipe).read_text())["datasets"][0]
    data = tmp_path / "conversations.jsonl"
    records = [_record(ds, c) for c in CONVERSATIONS] if ds["type"] == "chat_template" else []
    write_jsonl(data, records)
    cfg, _ = cpu_run.cpu_config(ROOT / recipe, dataset=data, output_dir=tmp_path / "run")
    caps = {"bf16": False, "fp8": False, "tf32": False, "n_gpu": 1, "compute_capability": None}
    valid = validate_config(DictDefault(copy.deepcopy(cfg)), capabilities=caps,
                            env_capabilities={"torch_version": str(torch.__version__).split("+")[0]})
    normalize_config(valid)
    normalize_cfg_datasets(valid)
    valid.dataset_num_proc = None  # in this process (datasets 4 runs num_proc=1 in a worker process)
    tokenizer = load_tokenizer(valid)
    base, _, style = str(ds["type"]).partition(":")
    with quiet_datasets():  # no fingerprint hashing of the tokenizer (nothing is cached)
        wrapped, _ = get_dataset_wrapper(valid.datasets[0], tokenizer, valid, base,
                                         datasets.Dataset.from_list(records), style or None)
    return tokenizer, [{"input_ids": list(r["input_ids"]), "labels": list(r["labels"])} for r in wrapped]


def last_reply_start(example):
    """Index of the first token of the last trained span (the final assistant reply)."""
    labels = example["labels"]
    starts = [i for i, label in enumerate(labels) if label != -100 and (i == 0 or labels[i - 1] == -100)]
    assert starts, "nothing is trained"
    return starts[-1]


def served_model(stand_in, tokenizer, out):
    """The stand-in's weights with the tokenizer (and chat template) Axolotl trained with."""
    out.mkdir()
    for item in Path(stand_in).iterdir():
        if item.name.startswith(("config", "generation_config", "model")):
            (out / item.name).symlink_to(item)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def paths(request, tmp_path_factory):
    """name -> dict(served model dir, gguf, trained examples, prompts per path); built once per model."""
    made = {}

    def build(name):
        if name in made:
            return made[name]
        tmp = tmp_path_factory.mktemp(f"parity-{name}")
        stand_in = request.getfixturevalue(name)
        tokenizer, trained = axolotl_tokenized(RECIPES[name], tmp)
        served = served_model(stand_in, tokenizer, tmp / "served")
        gguf_path = export.export_model(served, tmp / "model.gguf", "f16")
        made[name] = {"served": served, "gguf": gguf_path, "trained": trained}
        return made[name]

    return build


def prompts(conversation):
    return conversation[:-1]


def hf_prompt(served, messages):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(served))
    return list(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))


def llama_cpp_prompts(gguf_path, modelfile, conversations):
    """(llama.cpp chat completion prompt ids, Ollama prompt ids, add_bos_token) per conversation; the
    Ollama ids are None where Go is not installed (ollama_go.binary() then skips or fails the test)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf_path), n_ctx=512, n_threads=2, verbose=False)
    add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token") == "true"
    chat, served = [], []
    for messages in conversations:
        llm.reset()
        llm.create_chat_completion(messages=messages, max_tokens=1, temperature=0.0)
        # max_tokens=1: the sampled token is never evaluated, so the evaluated ids are the prompt
        chat.append(llm.input_ids[: llm.n_tokens].tolist())
        if not ollama_go.available():
            served.append(None)
            continue
        text = ollama_go.render_modelfile(modelfile, messages)
        # Ollama (llm/llama_server.go) sends the Go-rendered prompt to llama-server's /completion, which
        # tokenizes it with special tokens parsed and BOS added when tokenizer.ggml.add_bos_token says so
        served.append(llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))
    return chat, served, add_bos




@pytest.mark.parametrize("name", list(RECIPES))
def test_every_serving_path_feeds_the_trained_prefix(name, paths, tmp_path):
    built = paths(name)
    served, trained = built["served"], built["trained"]
    assert len(trained) == len(CONVERSATIONS)
    modelfile, _ = ollama.build_modelfile(tmp_path / "Modelfile", served, gguf=built["gguf"])
    chat, ollama_ids, add_bos = llama_cpp_prompts(built["gguf"], modelfile, [prompts(c) for c in CONVERSATIONS])
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(served))
    # the GGUF's add_bos_token is the tokenizer's own: plain text gets BOS exactly when HF adds it
    assert add_bos == (tok("x")["input_ids"][0] == tok.bos_token_id)
    for i, conversation in enumerate(CONVERSATIONS):
        example = trained[i]
        start = last_reply_start(example)
        want = example["input_ids"][:start]
        reply = tok.decode(example["input_ids"][start:], skip_special_tokens=True)
        assert reply.strip() == conversation[-1]["content"], f"{name}: the trained reply is not the last turn"
        got = {
            "transformers": hf_prompt(served, prompts(conversation)),
            "llama.cpp": chat[i],
            "ollama": ollama_ids[i],
        }
        for path, ids in got.items():
            if ids is None:
                continue
            assert ids == want, (
                f"{name} conversation {i}: {path} feeds\n  {tok.convert_ids_to_tokens(ids)[:12]}...\n"
                f"training taught\n  {tok.convert_ids_to_tokens(want)[:12]}...")
    ollama_go.binary()  # where Go is missing, the Ollama path was not checked: skip (or fail where set-up installs Go)


def test_tinyllama_trains_with_bos_like_its_tokenizer(paths):
    """TinyLlama's tokenizer adds <s> (add_bos_token: true) and the chat model was tuned on sequences
    that start with it: Axolotl's trained sequence starts with <s>, once. Its zephyr template writes no
    <s> and Axolotl's chat_template strategy adds none, so the TinyLlama recipes use the same template with
    {{ bos_token }} first (chat_template_jinja); the serving paths above then feed that <s> too."""
    trained = paths("tinyllama")["trained"]
    for example in trained:
        assert example["input_ids"][0] == 1 and example["input_ids"][1] != 1


# --- the real vLLM server ----------------------------------------------------------------------------

def vllm_prompt_ids(base_url, model, messages):
    body = json.dumps({"model": model, "messages": messages, "max_tokens": 1, "temperature": 0.0,
                       "return_token_ids": True}).encode()
    request = urllib.request.Request(base_url + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["prompt_token_ids"]


@pytest.mark.slow
# SmolLM2's served path is checked on tests/test_use_cases.py's server (the embedded model itself, with
# the five adapters), which saves a server start of its own (about 90 s)
@pytest.mark.parametrize("name", ["tinyllama", "llama31"])
def test_vllm_chat_endpoint_feeds_the_trained_prefix(name, paths, tmp_path):
    from deploy import vllm
    from deploy.vllm_server import Server, free_port, vllm_python

    assert vllm_python(), "vLLM is not installed: scripts/setup.sh installs it into .cache/vllm"
    built = paths(name)
    port = free_port()
    argv, _, _ = vllm.serve_argv(merged=str(built["served"]), port=port, served_model_name="m", check=False,
                                 extra=["--max-model-len", "512", "--enforce-eager"])
    with Server(argv, tmp_path / "vllm.log", port=port, timeout=240) as server:
        for i, conversation in enumerate(CONVERSATIONS):
            example = built["trained"][i]
            want = example["input_ids"][:last_reply_start(example)]
            assert vllm_prompt_ids(server.base_url, "m", prompts(conversation)) == want, \
                f"{name} conversation {i}: vLLM's chat prompt differs from the trained prefix"
