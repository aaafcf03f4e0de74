"""Shared by the eval helpers: load a model (HF directory with an optional PEFT adapter, or a GGUF
file through llama.cpp) or reach one served by an OpenAI-compatible endpoint (vLLM, llama.cpp's server;
--base-url, --model is then a served name such as an adapter's), generate with its chat template, and
the --model/--adapter/--base-url CLI arguments.

Loading is safe by default: never trust_remote_code, safetensors only; pickle weights (`*.bin`)
are refused unless allow_pickle is set (--allow-pickle).
"""
import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from common import offline_defaults
from common.errors import InputError

ADAPTER_CONFIG = "adapter_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


# ---------------------------------------------------------------- loading HF models and adapters

def _has_safetensors(path):
    return any(Path(path).glob("*.safetensors"))


def _has_pickle(path):
    return any(Path(path).glob("*.bin")) or any(Path(path).glob("*.pt"))


def check_model_dir(path, allow_pickle=False):
    """A local HF model directory with safetensors weights (or pickle ones when allowed)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such model directory")
    if not (path / "config.json").exists():
        raise InputError("not a Hugging Face model directory (no config.json)", path)
    if not _has_safetensors(path):
        if _has_pickle(path) and not allow_pickle:
            raise InputError("weights are pickle files (*.bin); pass --allow-pickle only if you trust them", path)
        if not _has_pickle(path):
            raise InputError("no model weights (*.safetensors) found", path)
    return path


def check_adapter_dir(path, allow_pickle=False):
    """A PEFT adapter directory: adapter_config.json plus adapter_model.safetensors (or .bin if allowed)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such adapter directory")
    if not (path / ADAPTER_CONFIG).exists():
        raise InputError(f"not a PEFT adapter directory (no {ADAPTER_CONFIG})", path)
    if not (path / "adapter_model.safetensors").exists():
        if (path / "adapter_model.bin").exists():
            if not allow_pickle:
                raise InputError("adapter weights are a pickle file (adapter_model.bin); "
                                 "pass --allow-pickle only if you trust it", path)
        else:
            raise InputError("no adapter_model.safetensors found", path)
    return path


def adapter_base(adapter):
    """The base model an adapter names in its adapter_config.json (or None)."""
    try:
        config = json.loads((Path(adapter) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return config.get("base_model_name_or_path")


def pick_device(device="auto"):
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load(model_dir, adapter=None, allow_pickle=False, device="auto", dtype=None):
    """Load (model, tokenizer) from a local HF directory, with a PEFT adapter on top if given.

    The tokenizer comes from the adapter directory when it has one (Axolotl saves it there, with any
    chat template or tokens the run added), else from the model directory. The model is in eval mode.
    """
    offline_defaults()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    model_dir = check_model_dir(model_dir, allow_pickle)
    if adapter is not None:
        adapter = check_adapter_dir(adapter, allow_pickle)
    device = pick_device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    tok_dir = adapter if adapter is not None and any((adapter / f).exists() for f in TOKENIZER_FILES) else model_dir
    hf_logging.disable_progress_bar()
    # decoding keeps the text as generated (no " ." -> "." clean-up, which is wrong for BPE vocabularies)
    tok = AutoTokenizer.from_pretrained(tok_dir, trust_remote_code=False, clean_up_tokenization_spaces=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, trust_remote_code=False, dtype=dtype, use_safetensors=None if allow_pickle else True)
    if len(tok) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tok))
    if adapter is not None:
        from peft import PeftModel

        # PEFT reads adapter_model.safetensors when present; a .bin got past check_adapter_dir only if allowed
        model = PeftModel.from_pretrained(model, adapter)
    model.to(device)
    model.eval()
    return model, tok


@contextlib.contextmanager
def base_of(model):
    """Run the block with a PEFT model's adapter disabled (the base model); a plain model is unchanged."""
    if hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
        with model.disable_adapter():
            yield model
    else:
        yield model


# ---------------------------------------------------------------- generation

def render_prompt(tok, messages):
    """The chat-template text of `messages` followed by the assistant generation prompt."""
    if not getattr(tok, "chat_template", None):
        raise InputError("the tokenizer has no chat template; pick a chat model or add one")
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def generate_batch(model, tok, list_of_messages, max_new_tokens, temperature=0.0, batch_size=8,
                   top_p=1.0, seed=0, progress=None):
    """Generate one reply per conversation, batched with left padding; greedy when temperature is 0.

    Each item of list_of_messages is a list of {"role", "content"} ending on a user turn. Returns the
    decoded replies (special tokens dropped, whitespace stripped) in input order. `progress(done, total)`
    is called after each batch.
    """
    prompts = [render_prompt(tok, messages) for messages in list_of_messages]
    # the chat template already wrote the special tokens (bos) it wants
    return complete_batch(model, tok, prompts, max_new_tokens, temperature, batch_size, top_p, seed, progress,
                          add_special_tokens=False)


def complete_batch(model, tok, prompts, max_new_tokens, temperature=0.0, batch_size=8, top_p=1.0, seed=0,
                   progress=None, add_special_tokens=True):
    """Continue each raw prompt text (no chat template: e.g. an Alpaca prompt), as generate_batch does;
    the tokenizer adds its special tokens as it does in training unless add_special_tokens is False."""
    import torch

    # longest first: less padding inside a batch, and running out of memory shows up at once
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    outputs = [None] * len(prompts)
    sampling = temperature is not None and temperature > 0
    gen_kwargs = dict(max_new_tokens=max_new_tokens, do_sample=sampling, pad_token_id=tok.pad_token_id)
    if sampling:
        gen_kwargs.update(temperature=float(temperature), top_p=float(top_p), top_k=0)
        torch.manual_seed(seed)
    else:
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    device = next(model.parameters()).device
    old_side = tok.padding_side
    tok.padding_side = "left"
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True,
                      add_special_tokens=add_special_tokens)
            enc = {k: v.to(device) for k, v in enc.items()}
            with torch.no_grad():
                out = model.generate(**enc, **gen_kwargs)
            new = out[:, enc["input_ids"].shape[1]:]
            for i, ids in zip(idx, new):
                outputs[i] = tok.decode(ids, skip_special_tokens=True).strip()
            if progress:
                progress(min(start + batch_size, len(order)), len(order))
    finally:
        tok.padding_side = old_side
    return outputs


class HFGenerator:
    """A local HF model (with optional adapter) behind the generator interface the CLIs share."""

    kind = "hf"

    def __init__(self, model_dir, adapter=None, allow_pickle=False, device="auto", batch_size=8):
        self.model_dir, self.adapter, self.batch_size = str(model_dir), adapter and str(adapter), batch_size
        self.model, self.tok = load(model_dir, adapter, allow_pickle, device)
        self.use_base = False

    @classmethod
    def from_loaded(cls, model, tok, model_dir="model", adapter=None, batch_size=8):
        """Wrap a model and tokenizer that are already loaded."""
        self = cls.__new__(cls)
        self.model, self.tok, self.batch_size, self.use_base = model, tok, batch_size, False
        self.model_dir, self.adapter = str(model_dir), adapter and str(adapter)
        return self

    @property
    def name(self):
        base = self.model_dir + (f" + {self.adapter}" if self.adapter else "")
        return f"{self.model_dir} (adapter disabled)" if self.use_base else base

    @contextlib.contextmanager
    def base(self):
        """Generate with the adapter switched off inside the block."""
        with base_of(self.model):
            self.use_base = True
            try:
                yield self
            finally:
                self.use_base = False

    def generate(self, list_of_messages, max_new_tokens, temperature=0.0, top_p=1.0, seed=0, progress=None):
        return generate_batch(self.model, self.tok, list_of_messages, max_new_tokens, temperature,
                              self.batch_size, top_p, seed, progress)

    def complete(self, prompts, max_new_tokens, progress=None):
        """Greedy continuations of raw prompt texts (no chat template)."""
        return complete_batch(self.model, self.tok, prompts, max_new_tokens, 0.0, self.batch_size, progress=progress)


class GGUFGenerator:
    """A GGUF model through llama.cpp (llama_cpp.Llama.create_chat_completion, the GGUF's chat template)."""

    kind = "gguf"

    def __init__(self, path, n_ctx=2048, chat_format=None, n_threads=None, seed=0):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such GGUF file")
        from llama_cpp import Llama

        self.model_dir, self.adapter = str(path), None
        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, chat_format=chat_format, n_threads=n_threads,
                         seed=seed, verbose=False)
        self.name = str(path)

    @contextlib.contextmanager
    def base(self):
        raise InputError("--compare-base needs an HF model with --adapter, not a GGUF file")
        yield  # pragma: no cover

    def generate(self, list_of_messages, max_new_tokens, temperature=0.0, top_p=1.0, seed=0, progress=None):
        outputs = []
        for n, messages in enumerate(list_of_messages, 1):
            self.llm.reset()  # no reuse of the previous prompt's KV cache: a reply does not depend on call order
            reply = self.llm.create_chat_completion(
                messages=messages, max_tokens=max_new_tokens, temperature=float(temperature or 0.0),
                top_p=float(top_p), seed=seed)
            outputs.append((reply["choices"][0]["message"].get("content") or "").strip())
            if progress:
                progress(n, len(list_of_messages))
        return outputs


class EndpointGenerator:
    """A model served by an OpenAI-compatible endpoint, called by its served name (e.g. a LoRA adapter's
    name on a vLLM server): the evaluation sees exactly what users of the server get. The server applies
    the chat template. Requests run `concurrency` at a time."""

    kind = "endpoint"

    def __init__(self, base_url, model, api_key=None, concurrency=8, timeout=300):
        from openai import APIConnectionError, OpenAI, OpenAIError

        from deploy.vllm import _api_root

        self.base_url = _api_root(base_url) + "/v1"  # with or without /v1, as deploy.vllm takes it
        self.model_dir, self.adapter, self.concurrency = model, None, max(1, concurrency)
        self.name = f"{model} @ {self.base_url}"
        self.client = OpenAI(base_url=self.base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
                             timeout=timeout, max_retries=0)
        try:
            served = [m.id for m in self.client.models.list()]
        except APIConnectionError:
            raise InputError(f"cannot reach {self.base_url}: is the server running?", field="base-url") from None
        except OpenAIError as err:
            raise InputError(f"{self.base_url}: {err}", field="base-url") from None
        if model not in served:
            raise InputError(f"{self.base_url} serves no model {model!r}; it serves: {', '.join(served)}",
                             field="model")

    @contextlib.contextmanager
    def base(self):
        raise InputError("--compare-base needs a local --adapter; with --base-url give the base's served "
                         "name as another --model")
        yield  # pragma: no cover

    def _one(self, messages, max_new_tokens, temperature, top_p, seed):
        from openai import APIConnectionError, OpenAIError

        try:
            reply = self.client.chat.completions.create(
                model=self.model_dir, messages=messages, max_tokens=max_new_tokens,
                temperature=float(temperature or 0.0), top_p=float(top_p), seed=seed)
        except APIConnectionError:
            raise InputError(f"lost {self.base_url} (is the server still running?)", field="base-url") from None
        except OpenAIError as err:
            raise InputError(f"{self.base_url}: {err}", field="model") from None
        return (reply.choices[0].message.content or "").strip()

    def _text(self, prompt, max_new_tokens):
        from openai import APIConnectionError, OpenAIError

        try:
            reply = self.client.completions.create(model=self.model_dir, prompt=prompt, max_tokens=max_new_tokens,
                                                   temperature=0.0)
        except APIConnectionError:
            raise InputError(f"lost {self.base_url} (is the server still running?)", field="base-url") from None
        except OpenAIError as err:
            raise InputError(f"{self.base_url}: {err}", field="model") from None
        return (reply.choices[0].text or "").strip()

    def generate(self, list_of_messages, max_new_tokens, temperature=0.0, top_p=1.0, seed=0, progress=None):
        return self._all(self._one, [(m, max_new_tokens, temperature, top_p, seed) for m in list_of_messages],
                         progress)

    def complete(self, prompts, max_new_tokens, progress=None):
        """Greedy continuations of raw prompt texts through /v1/completions (no chat template)."""
        return self._all(self._text, [(p, max_new_tokens) for p in prompts], progress)

    def _all(self, call, arg_lists, progress):
        from concurrent.futures import ThreadPoolExecutor

        outputs = []
        with ThreadPoolExecutor(self.concurrency) as pool:
            futures = [pool.submit(call, *args) for args in arg_lists]
            for future in futures:  # in input order
                outputs.append(future.result())
                if progress:
                    progress(len(outputs), len(futures))
        return outputs


def is_gguf(path):
    return str(path).lower().endswith(".gguf")


def resolve_model(model, adapter, base_url=None):
    """The base model path: --model, or the base named in the adapter's config when --model is left out.
    With an endpoint (base_url), --model is a served model name and --adapter does not apply."""
    if base_url:
        if adapter:
            raise InputError("--adapter is a local directory; with --base-url give the adapter's served name "
                             "as --model", field="adapter")
        if not model:
            raise InputError("with --base-url, give --model: a name the server serves (GET /v1/models)",
                             field="model")
        return model
    if model is None:
        if adapter is None:
            raise InputError("give --model (an HF model directory or a .gguf file)")
        model = adapter_base(adapter)
        if model is None:
            raise InputError("--model not given and the adapter config names no base model",
                             Path(adapter) / ADAPTER_CONFIG)
    return model


def open_generator(model, adapter=None, allow_pickle=False, device="auto", batch_size=8, n_ctx=2048,
                   base_url=None):
    """An HFGenerator or GGUFGenerator for `model` (a .gguf path picks llama.cpp), or with base_url an
    EndpointGenerator for the served model named `model` (batch_size requests at a time)."""
    model = resolve_model(model, adapter, base_url)
    if base_url:
        return EndpointGenerator(base_url, model, concurrency=batch_size)
    if is_gguf(model):
        if adapter:
            raise InputError("--adapter applies to HF models; merge it into the GGUF instead", model)
        return GGUFGenerator(model, n_ctx=n_ctx)
    return HFGenerator(model, adapter, allow_pickle, device, batch_size)


# ---------------------------------------------------------------- CLI arguments

class _ModelAction(argparse.Action):
    """--model appends a new entry; --adapter attaches to the latest --model (or starts one)."""

    def __call__(self, parser, namespace, value, option_string=None):
        specs = list(getattr(namespace, self.dest) or [])
        if option_string == "--model" or not specs or specs[-1]["adapter"] is not None:
            if option_string == "--model":
                specs.append({"model": value, "adapter": None})
            else:
                specs.append({"model": None, "adapter": value})
        else:
            specs[-1]["adapter"] = value
        setattr(namespace, self.dest, specs)


def add_model_args(parser, multi=False, gguf=True, endpoint=True):
    """--model/--adapter (repeatable when multi), --allow-pickle, --device, --batch-size, and --base-url
    (unless endpoint is False)."""
    what = "HF model directory" + (" or .gguf file" if gguf else "") + (
        " (with --base-url: a served model name, e.g. an adapter's)" if endpoint else "")
    if multi:
        parser.add_argument("--model", dest="models", action=_ModelAction, metavar="PATH",
                            help=f"{what}; repeat to evaluate several models")
        parser.add_argument("--adapter", dest="models", action=_ModelAction, metavar="DIR",
                            help="PEFT adapter directory for the --model before it (without --model: "
                                 "the base its adapter_config.json names)")
    else:
        parser.add_argument("--model", metavar="PATH", help=what)
        parser.add_argument("--adapter", metavar="DIR", help="PEFT adapter directory (safetensors)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="allow pickle weights (*.bin); they can run code when loaded")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="generation batch size, or requests at a time with --base-url (default 8)")
    if endpoint:
        parser.add_argument("--base-url", metavar="URL",
                            help="an OpenAI-compatible endpoint (vLLM, llama.cpp's server), e.g. http://127.0.0.1:8000/v1; "
                                 "the API key is read from $OPENAI_API_KEY")


def model_specs(args):
    """[(model, adapter)] from add_model_args(multi=True)."""
    base_url = getattr(args, "base_url", None)
    specs = [(resolve_model(s["model"], s["adapter"], base_url), s["adapter"]) for s in (args.models or [])]
    if not specs:
        raise InputError("give at least one --model (or --adapter)")
    return specs


def stderr_progress(label):
    """A progress(done, total) callback printing to stderr."""

    def progress(done, total):
        print(f"{label}: {done}/{total}", file=sys.stderr, flush=True)

    return progress
