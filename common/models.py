"""The models this repo builds locally: the embedded SmolLM2 and tiny stand-ins of the recipe models."""
from common import MODELS

EMBEDDED = "smollm2-135m-instruct"
TINYLLAMA = "tinyllama-stand-in"
LLAMA31 = "llama3.1-stand-in"
QWEN25 = "qwen2.5-stand-in"
PHI35 = "phi3.5-mini-stand-in"
GEMMA4 = "gemma4-e2b-stand-in"

# hub id fragment (lower case) -> local model that stands in for it on CPU
STAND_INS = {
    "smollm2": EMBEDDED,
    "tinyllama": TINYLLAMA,
    "llama-3.1": LLAMA31,
    "llama-3-8b": LLAMA31,
    "qwen2": QWEN25,  # Qwen2 and Qwen2.5 (Qwen/Qwen2.5-0.5B-Instruct): one architecture and tokenizer
    "phi-3": PHI35,  # Phi-3 and Phi-3.5 mini (microsoft/Phi-3-mini-4k-instruct, microsoft/Phi-3.5-mini-instruct)
    # Gemma 4 E2B/E4B (google/gemma-4-E2B-it): the language model, Gemma4ForCausalLM, with E2B's template; not
    # 26B-A4B/31B, whose template ends the generation prompt with an empty thought block (and 26B is MoE)
    "gemma-4-e2b": GEMMA4,
    "gemma-4-e4b": GEMMA4,
}


def local_model(name):
    return MODELS / name


def stand_in_for(base_model):
    """Local model that stands in for a recipe's base model, or None if there is none."""
    key = str(base_model).lower()
    for fragment, name in STAND_INS.items():
        if fragment in key:
            return local_model(name)
    return None
