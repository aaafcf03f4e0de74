"""Serve LoRA adapters with vLLM: check an adapter, start the server, write its command, load/unload, chat.

  check ADAPTER_DIR [--max-lora-rank N] [--base MODEL_DIR]
      Checks adapter_config.json and the tensor names/shapes in adapter_model.safetensors against
      vLLM's LoRA rules; each failure comes with its fix. Exit 0 servable, 1 not servable.
  serve (--base MODEL --adapter NAME=PATH ... | --merged DIR) [--host 127.0.0.1] [--port 8000]
        [--api-key-env VLLM_API_KEY] [--served-model-name NAME] [--allow-runtime-lora] [--log FILE]
      Checks every adapter, starts vLLM (deploy.vllm_server), waits for /health with a progress line,
      prints the endpoint and the served names, serves until Ctrl-C/SIGTERM, then stops every
      process it started.
  serve-command (same options) [--recipe RECIPE.yml | --max-model-len N] [-o serve.sh]
      Prints (or writes as a script) the server command: --lora-modules as JSON objects,
      --max-lora-rank the smallest allowed value >= every adapter's rank, --max-loras = number of
      adapters, --max-model-len the recipe's sequence_len (vLLM's default is the model's whole
      context, 131072 for Llama 3.1, whose KV cache does not fit beside the weights on a 24 GB card). Every argument is shell-quoted; the API key is read from an environment variable,
      never written.
  load --base-url URL NAME PATH / unload --base-url URL NAME
      POST /v1/load_lora_adapter or /v1/unload_lora_adapter on a running server; the server must
      have been started with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (--allow-runtime-lora).
  chat --base-url URL --model NAME [--system TEXT] PROMPT
      One chat completion through the openai client (any OpenAI-compatible server); the API key
      comes from --api-key-env (default VLLM_API_KEY), "EMPTY" when unset.

vLLM's rules checked (vllm/lora/peft_helper.py, vllm/config/lora.py, vllm/lora/lora_model.py of
vllm 0.32; tests/test_vllm_server.py holds them to what the real server does): r, lora_alpha and
target_modules present; rank <= --max-lora-rank, one of 1, 8, 16, 32, 64, 128, 256, 320, 512
(default 16); no modules_to_save (except classifier/score); no DoRA, lora_bias, aLoRA,
layer_replication, BD-LoRA, QALoRA, or init_lora_weights pissa/olora/corda/loftq; bias "none"; LoRA only on modules vLLM replaces in Llama models
(q/k/v/o_proj, gate/up/down_proj); no tokens added beyond the base vocabulary. LoRA on
embed_tokens/lm_head is a warning: vLLM accepts it only for architectures that register embedding
modules (Llama does) and with an unchanged vocabulary. --strict turns warnings into failures.
"""
import argparse
import json
import os
import re
import shlex
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from common.errors import InputError, cli
from common.io import atomic_open, check_output, read_json
from common.run import Run

ALLOWED_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
DEFAULT_MAX_LORA_RANK = 16
LLAMA_LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
EMBEDDING_MODULES = ("embed_tokens", "lm_head")
MERGE_FIX = "or merge the adapter into the base (python -m deploy.merge) and serve the merged model (--merged)"
LORA_TENSOR = re.compile(r"^(?P<module>.+?)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B|"
                         r"lora_magnitude_vector)(?:\.default)?(?:\.weight)?$")
# init_lora_weights strings vLLM accepts (the others change base weights at load time)
SUPPORTED_STRING_INITS = ("gaussian", "eva", "orthogonal", "mica", "lora_ga")
UNSUPPORTED_FEATURES = {"alora_invocation_tokens": "Activated LoRA (aLoRA)", "layer_replication": "layer_replication",
                        "use_bdlora": "block-diagonal LoRA (BD-LoRA)", "use_qalora": "QALoRA"}
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# architectures whose checkpoints fuse projections vLLM's Llama code splits: their fused names are LoRA
# targets there too (vllm/model_executor/models/phi3.py: packed_modules_mapping qkv_proj, gate_up_proj)
FUSED_LORA_MODULES = {"Phi3ForCausalLM": ("qkv_proj", "gate_up_proj")}


def lora_modules(arch=None):
    """The module names vLLM replaces with LoRA layers for this architecture (Llama's, plus fused ones)."""
    return LLAMA_LORA_MODULES + FUSED_LORA_MODULES.get(arch, ())


def smallest_allowed_rank(rank):
    for allowed in ALLOWED_RANKS:
        if allowed >= rank:
            return allowed
    return None


def _tokenizer_size(path):
    """Number of token ids in a tokenizer.json (model vocab plus added tokens)."""
    data = read_json(path)
    ids = [t.get("id", -1) for t in data.get("added_tokens") or []]
    vocab = (data.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):
        ids += list(vocab.values())
    elif isinstance(vocab, list):
        ids.append(len(vocab) - 1)
    return max(ids) + 1 if ids else 0


def _resolve_base(adapter_dir, config, base):
    """Local base model dir: --base, else the adapter's base_model_name_or_path if it is a local dir."""
    if base:
        base = Path(base)
        if not (base / "config.json").exists():
            raise FileNotFoundError(f"{base}: no config.json (give the local base model dir)")
        return base
    name = config.get("base_model_name_or_path")
    if name:
        for candidate in (Path(name), Path(adapter_dir) / name):
            if (candidate / "config.json").exists():
                return candidate
    return None


def check_adapter(adapter_dir, max_lora_rank=None, base=None):
    """vLLM servability of a PEFT LoRA adapter dir.

    Returns a dict: problems (list of 'what: why. Fix: how'), warnings, rank (largest LoRA rank),
    needed_max_lora_rank, modules (LoRA target module names found in the weights), base (dir or None).
    """
    adapter_dir = Path(adapter_dir)
    if max_lora_rank is not None and max_lora_rank not in ALLOWED_RANKS:
        raise InputError(f"{max_lora_rank} is not a value vLLM accepts for --max-lora-rank "
                         f"({', '.join(map(str, ALLOWED_RANKS))})", field="max-lora-rank")
    config_path = adapter_dir / "adapter_config.json"
    if not adapter_dir.is_dir():
        raise FileNotFoundError(f"{adapter_dir}: no such adapter directory")
    config = read_json(config_path)
    problems, warnings = [], []

    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        problems.append(f"peft_type {peft_type}: vLLM serves LoRA adapters only. Fix: train a LoRA adapter "
                        f"({MERGE_FIX} if the method can be merged)")

    # rank
    ranks = []
    r = config.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        problems.append(f"r = {r!r}: the LoRA rank must be a positive integer. Fix: repair adapter_config.json")
    else:
        ranks.append(r)
    pattern = config.get("rank_pattern") or {}
    if isinstance(pattern, dict):
        ranks += [v for v in pattern.values() if isinstance(v, int) and not isinstance(v, bool)]

    # unsupported PEFT features
    for key in ("r", "lora_alpha", "target_modules"):  # vLLM's PEFTHelper requires all three
        if key not in config:
            problems.append(f"adapter_config.json has no {key!r}: vLLM requires r, lora_alpha and target_modules. "
                            "Fix: repair adapter_config.json (PEFT's save_pretrained writes them)")
    if config.get("lora_bias"):
        problems.append(f"lora_bias = true: vLLM does not support LoRA bias. Fix: retrain without it {MERGE_FIX}")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in SUPPORTED_STRING_INITS:
        problems.append(f"init_lora_weights = {init!r}: PiSSA, OLoRA, CorDA and LoftQ change the base weights "
                        "when PEFT loads the adapter, which vLLM does not do. Fix: convert it to a plain LoRA "
                        "(PEFT's path_initial_model_for_weight_conversion) " + MERGE_FIX)
    for key, what in UNSUPPORTED_FEATURES.items():
        if config.get(key):
            problems.append(f"{key} is set: vLLM does not support {what}. Fix: {MERGE_FIX[3:]}")
    modules_to_save = [m for m in config.get("modules_to_save") or [] if m not in ("classifier", "score")]
    if modules_to_save:
        problems.append(f"modules_to_save = {modules_to_save}: vLLM only supports modules_to_save being None "
                        "(whole modules trained next to the LoRA). Fix: retrain without them (Axolotl: drop "
                        f"lora_modules_to_save) {MERGE_FIX}")
    if config.get("use_dora"):
        problems.append(f"use_dora = true: vLLM does not support DoRA. Fix: retrain with peft_use_dora: false {MERGE_FIX}")
    bias = config.get("bias", "none")
    if bias != "none":
        problems.append(f"bias = {bias!r}: vLLM does not support adapter biases (only bias \"none\"). "
                        f"Fix: retrain with bias \"none\" {MERGE_FIX}")
    if config.get("trainable_token_indices"):
        problems.append("trainable_token_indices is set: released vLLM versions cannot load trained token rows "
                        f"(only the newest accept them with --max-lora-trainable-tokens). Fix: {MERGE_FIX[3:]}")

    # tensors: the source of truth for which modules carry LoRA weights (as in vLLM)
    modules, tensor_ranks, vocab_rows = set(), [], {}
    weights = adapter_dir / "adapter_model.safetensors"
    if weights.exists():
        from deploy.shards import Shard

        shard = Shard(weights)  # header only; a truncated or corrupt file is an InputError naming it
        names = shard.names()
        shapes = {name: list(shard.shape(name)) for name in names}
        for name in names:
            shape = shapes[name]
            match = LORA_TENSOR.match(name)
            if not match:
                stem = name.removesuffix(".weight")
                is_base_layer = stem.endswith(".base_layer")
                leaf = stem.removesuffix(".base_layer").rsplit(".", 1)[-1]
                if leaf in EMBEDDING_MODULES and shape:
                    vocab_rows[name] = shape[0]
                    if is_base_layer:  # copies of the base embeddings (save_embedding_layers); vLLM skips them
                        continue
                    problems.append(f"tensor {name}: a full {leaf} matrix is saved in the adapter (trained or "
                                    "resized embeddings), which vLLM cannot load from a LoRA adapter. "
                                    f"Fix: train without it {MERGE_FIX}")
                else:
                    problems.append(f"tensor {name}: not a LoRA weight vLLM knows how to load. Fix: {MERGE_FIX[3:]}")
                continue
            leaf = match["module"].rsplit(".", 1)[-1]
            modules.add(leaf)
            kind = match["kind"]
            if kind == "lora_magnitude_vector" and not config.get("use_dora"):
                problems.append(f"tensor {name}: DoRA magnitude vector; vLLM does not support DoRA. "
                                f"Fix: {MERGE_FIX[3:]}")
            if kind in ("lora_A", "lora_embedding_A") and len(shape) == 2:
                tensor_ranks.append(shape[0])
            if kind == "lora_embedding_A" and len(shape) == 2:
                vocab_rows[name] = shape[1]
        if not modules and not problems:
            problems.append("adapter_model.safetensors holds no LoRA tensors. Fix: save the trained adapter "
                            "with save_pretrained()")
    elif (adapter_dir / "adapter_model.bin").exists():
        warnings.append("adapter_model.bin is a pickle file (vLLM loads it with torch.load(weights_only=True)); "
                        "the module names and ranks in it were not checked. Prefer safetensors: "
                        "save_pretrained(safe_serialization=True)")
        targets = config.get("target_modules") or []
        modules = set(targets if isinstance(targets, list) else [])
    else:
        problems.append("no adapter_model.safetensors (or .bin): vLLM needs the adapter weights. "
                        "Fix: point at the folder save_pretrained() wrote")

    embed = sorted(m for m in modules if m in EMBEDDING_MODULES)
    if embed:
        warnings.append(f"LoRA on {', '.join(embed)}: vLLM loads embedding/lm_head LoRA only for architectures "
                        "that register embedding modules (Llama does; several others reject the adapter as "
                        "'unexpected target modules') and only with the base vocabulary; releases since the "
                        "removal of LoRA extra vocabulary (v0.12) cannot add tokens this way. If loading fails, "
                        f"retrain with {', '.join(LLAMA_LORA_MODULES)} {MERGE_FIX}")
    base_dir = _resolve_base(adapter_dir, config, base)
    base_config = read_json(base_dir / "config.json") if base_dir is not None else {}
    arch = (base_config.get("architectures") or ["?"])[0] if base_dir is not None else None
    served = lora_modules(arch)
    other = sorted(m for m in modules if m not in served and m not in EMBEDDING_MODULES)
    if other:
        kind = arch if arch in FUSED_LORA_MODULES else "Llama models"
        problems.append(f"LoRA on {', '.join(other)}: not a module vLLM replaces with a LoRA layer in {kind} "
                        f"({', '.join(served)}). Fix: retrain with those targets {MERGE_FIX}")

    rank = max(ranks + tensor_ranks) if ranks + tensor_ranks else None
    if tensor_ranks and r and isinstance(r, int) and max(tensor_ranks) > max(ranks):
        problems.append(f"weights have rank {max(tensor_ranks)} but adapter_config.json says r = {r}. "
                        "Fix: repair adapter_config.json (rank_pattern) to match the weights")
    needed = smallest_allowed_rank(rank) if rank else None
    if rank and needed is None:
        problems.append(f"rank {rank} is greater than the largest --max-lora-rank vLLM accepts "
                        f"({ALLOWED_RANKS[-1]}). Fix: retrain with r <= {ALLOWED_RANKS[-1]} {MERGE_FIX}")
    elif rank and max_lora_rank is not None and rank > max_lora_rank:
        problems.append(f"LoRA rank {rank} is greater than max_lora_rank {max_lora_rank}. "
                        f"Fix: serve with --max-lora-rank {needed}")
    elif rank and max_lora_rank is None and needed > DEFAULT_MAX_LORA_RANK:
        warnings.append(f"rank {rank} needs --max-lora-rank {needed} (vLLM's default is {DEFAULT_MAX_LORA_RANK})")

    # added tokens
    base_vocab = None
    if base_dir is not None:
        base_vocab = base_config.get("vocab_size")
        if "Llama" not in arch and arch not in FUSED_LORA_MODULES:
            warnings.append(f"base architecture {arch}: the target module list checked is vLLM's for Llama models")
    added_path = adapter_dir / "added_tokens.json"
    if added_path.exists():
        added = read_json(added_path)
        beyond = {t: i for t, i in added.items() if base_vocab is None or (isinstance(i, int) and i >= base_vocab)}
        if beyond:
            shown = ", ".join(f"{t!r}={i}" for t, i in list(beyond.items())[:5])
            problems.append(f"added_tokens.json adds {len(beyond)} token(s) ({shown})"
                            + (f" beyond the base vocabulary ({base_vocab})" if base_vocab else "")
                            + ": vLLM serves the base model's vocabulary and cannot load new token embeddings "
                            f"from a LoRA adapter. Fix: train without new tokens {MERGE_FIX}")
    if base_vocab is not None:
        grown = {n: rows for n, rows in vocab_rows.items() if rows > base_vocab}
        if grown:
            name, rows = next(iter(grown.items()))
            problems.append(f"tensor {name} has {rows} vocabulary rows, more than the base vocabulary "
                            f"({base_vocab}): the embeddings were resized for added tokens, which vLLM cannot "
                            f"serve from a LoRA adapter. Fix: train without new tokens {MERGE_FIX}")
    tok_path = adapter_dir / "tokenizer.json"
    if tok_path.exists():
        size = _tokenizer_size(tok_path)
        if base_vocab is not None and size > base_vocab:
            problems.append(f"the adapter's tokenizer has {size} tokens, more than the base vocabulary "
                            f"({base_vocab}): tokens were added, and vLLM cannot serve their embeddings from a "
                            f"LoRA adapter. Fix: train without new tokens {MERGE_FIX}")
        elif base_vocab is None:
            warnings.append("no local base model (give --base): added tokens were not compared with the base vocabulary")
    elif base_vocab is None and not added_path.exists():
        warnings.append("no local base model (give --base): added tokens were not checked")

    return {"problems": problems, "warnings": warnings, "rank": rank, "needed_max_lora_rank": needed,
            "modules": sorted(modules), "base": str(base_dir) if base_dir else None}


# --- serve command ---

def parse_adapter_spec(spec):
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise InputError(f"--adapter {spec!r}: expected NAME=PATH", field="adapter")
    return name, path


def serve_argv(base=None, adapters=(), merged=None, host="127.0.0.1", port=8000, api_key_env=None,
               served_model_name=None, max_lora_rank=None, check=True, extra=(), python=None, max_loras=None):
    """(argv list, api-key placeholder index or None, info).

    argv is `PYTHON -m vllm.entrypoints.openai.api_server --model MODEL ...`; PYTHON defaults to the
    interpreter of scripts/setup.sh's vLLM venv when it exists, else python3."""
    if bool(base) == bool(merged):
        raise InputError("give either --base MODEL (with --adapter NAME=PATH ...) or --merged DIR")
    if merged and adapters:
        raise InputError("--merged serves a merged model: drop --adapter, or use --base with adapters")
    if api_key_env is not None and not ENV_NAME.match(api_key_env):
        raise InputError(f"{api_key_env!r} is not an environment variable name", field="api-key-env")
    if not isinstance(port, int) or not 0 < port < 65536:
        raise InputError(f"port {port!r} out of range", field="port")
    model = merged or base
    if Path(model).exists():
        model = str(Path(model).resolve())
    elif merged:
        raise FileNotFoundError(f"{merged}: no such merged model directory")
    from deploy.vllm_server import ENTRYPOINT, vllm_python

    python = str(python or vllm_python() or "python3")
    argv = [python, "-m", ENTRYPOINT, "--model", model]
    if served_model_name:
        argv += ["--served-model-name", served_model_name]
    argv += ["--host", host, "--port", str(port)]
    key_index = None
    if api_key_env:
        argv += ["--api-key"]
        key_index = len(argv)
        argv.append(f"${api_key_env}")
    info = {"adapters": []}
    if adapters:
        names, specs, ranks = set(), [], []
        for spec in adapters:
            name, path = parse_adapter_spec(spec)
            if name in names:
                raise InputError(f"adapter name {name!r} given twice", field="adapter")
            names.add(name)
            result = check_adapter(path, base=Path(base) if Path(base, "config.json").exists() else None) \
                if check else None
            if result and result["problems"]:
                raise InputError(f"adapter {name!r} ({path}) cannot be served by vLLM:\n  - "
                                 + "\n  - ".join(result["problems"]), field="adapter")
            rank = result["rank"] if result else _config_rank(path)
            ranks.append(rank)
            specs.append({"name": name, "path": str(Path(path).resolve()),
                          "base_model_name": served_model_name or model})
            info["adapters"].append({"name": name, "rank": rank})
        needed = smallest_allowed_rank(max(ranks))
        if needed is None:
            raise InputError(f"rank {max(ranks)} exceeds vLLM's largest --max-lora-rank {ALLOWED_RANKS[-1]}")
        if max_lora_rank is not None:
            if max_lora_rank not in ALLOWED_RANKS:
                raise InputError(f"{max_lora_rank} is not a value vLLM accepts for --max-lora-rank "
                                 f"({', '.join(map(str, ALLOWED_RANKS))})", field="max-lora-rank")
            if max_lora_rank < max(ranks):
                raise InputError(f"--max-lora-rank {max_lora_rank} is below the adapters' rank {max(ranks)}",
                                 field="max-lora-rank")
            needed = max_lora_rank
        argv += ["--enable-lora", "--lora-modules"]
        argv += [json.dumps(s, ensure_ascii=False) for s in specs]
        argv += ["--max-lora-rank", str(needed), "--max-loras", str(max_loras or len(specs))]
        info["max_lora_rank"] = needed
        if "--chat-template" not in extra:
            template = _adapters_chat_template([s["path"] for s in specs], base)
            if template:
                argv += ["--chat-template", template]
                info["chat_template"] = template
    elif max_lora_rank is not None:
        raise InputError("--max-lora-rank only applies with --adapter")
    info["served"] = [served_model_name or model] + [a["name"] for a in info["adapters"]]
    if not any(a.startswith("--chat-template-content-format") for a in extra):
        # message content handed to the template as the string Axolotl trained on: left to "auto", vLLM
        # passes [{"type": "text", ...}] parts to a template that loops over parts (Gemma 4's), which
        # renders them differently (a system part gets a trailing space: another prompt than trained)
        argv += ["--chat-template-content-format", "string"]
    argv += list(extra)
    return argv, key_index, info


def recipe_sequence_len(recipe):
    """sequence_len of an Axolotl recipe (Axolotl's default 2048 when unset)."""
    run = Run.read(recipe)
    cfg = run.cfg
    value = (cfg or {}).get("sequence_len", 2048) if isinstance(cfg, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InputError(f"sequence_len must be a positive integer, got {value!r}", recipe,
                         run.line("sequence_len"), "sequence_len")
    return value


def _chat_template(directory):
    """(template text, the value to give --chat-template) saved in a model or adapter directory, or None."""
    directory = Path(directory)
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8"), str(jinja)
    config = directory / "tokenizer_config.json"
    template = read_json(config).get("chat_template") if config.is_file() else None
    return (template, template) if isinstance(template, str) else None


def _adapters_chat_template(adapter_dirs, base):
    """--chat-template for a server of these adapters, or None. vLLM renders every chat request with the
    base model's template; Axolotl saves the template an adapter was trained with beside it (a recipe's
    chat_template_jinja, e.g. TinyLlama's with <s> first). When the adapters carry one template that the
    base (where it is local) does not have, the server must use it. Adapters trained with different
    templates cannot share a server's chat endpoint: a warning says so."""
    found = {t[0]: t[1] for t in map(_chat_template, adapter_dirs) if t}
    if len(found) > 1:
        print("warning: the adapters were trained with different chat templates; one vLLM server renders "
              "every chat request with one template (serve them separately, or use /v1/completions)",
              file=sys.stderr)
        return None
    if not found:
        return None
    (text, value), = found.items()
    own = _chat_template(base) if base and Path(base).is_dir() else None
    return None if own and own[0] == text else value


def _config_rank(path):
    config = read_json(Path(path) / "adapter_config.json")
    ranks = [config.get("r") or 0] + list((config.get("rank_pattern") or {}).values())
    return max(ranks)


def shell_command(argv, key_index=None, multiline=False):
    """The command as shell text: every argument shlex-quoted, the API key as "$VAR"."""
    words = []
    for i, arg in enumerate(argv):
        words.append(f'"{arg}"' if i == key_index else shlex.quote(arg))
    if not multiline:
        return " ".join(words)
    lines, current = [], words[:5]
    for word in words[5:]:
        if word.startswith("--") and current:
            lines.append(" ".join(current))
            current = []
        current.append(word)
    lines.append(" ".join(current))
    return " \\\n  ".join(lines)


def serve_script(argv, key_index, api_key_env, allow_runtime_lora):
    out = ["#!/usr/bin/env bash", "# vLLM OpenAI-compatible server, written by python -m deploy.vllm serve-command",
           "set -euo pipefail"]
    if api_key_env:
        out.append(f': "${{{api_key_env}:?set {api_key_env} to the API key that clients must send}}"')
    if allow_runtime_lora:
        out.append("# lets clients load/unload adapters at runtime (POST /v1/load_lora_adapter)")
        out.append("export VLLM_ALLOW_RUNTIME_LORA_UPDATING=True")
    out.append("exec " + shell_command(argv, key_index, multiline=True))
    return "\n".join(out) + "\n"


def write_serve_script(path, argv, key_index=None, api_key_env=None, allow_runtime_lora=False, force=False):
    """The serve script of serve_argv's argv, written atomically and executable."""
    with atomic_open(path, force=force) as fh:
        fh.write(serve_script(argv, key_index, api_key_env, allow_runtime_lora))
    os.chmod(path, 0o755)
    print(f"wrote {path}", file=sys.stderr)
    return Path(path)


def serve(argv, info, host, port, log_path, timeout=300, runtime_lora=False, env=None):
    """Start vLLM, print the endpoint and the served names, serve until Ctrl-C or SIGTERM, then stop
    every process it started. Returns the server's exit code (0 when stopped by a signal)."""
    from deploy.vllm_server import Server, ServerError

    def terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    server = Server(argv, log_path, host, port, timeout, runtime_lora, env=env)
    try:
        server.start()
        print(f"serving at {server.base_url}/v1 (OpenAI-compatible); models: {', '.join(info['served'])}")
        print(f"log: {log_path}; Ctrl-C stops the server", flush=True)
        while server.alive():
            time.sleep(1)
        raise ServerError(f"vLLM exited with {server.proc.returncode}; log {log_path}")
    except KeyboardInterrupt:
        print("\nstopping vLLM ...", file=sys.stderr)
        server.stop()
        return 0
    finally:
        if server.alive():
            server.stop()
        signal.signal(signal.SIGTERM, previous)


# --- runtime adapter loading ---

def _api_root(base_url):
    url = base_url.rstrip("/")
    if url.endswith("/v1"):
        url = url[:-3]
    if not re.match(r"^https?://", url):
        raise InputError(f"{base_url!r}: expected an http:// or https:// URL", field="base-url")
    return url


def _post(base_url, route, body, api_key=None, timeout=60):
    request = urllib.request.Request(_api_root(base_url) + route, data=json.dumps(body).encode("utf-8"),
                                     headers={"Content-Type": "application/json"}, method="POST")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")


def load_adapter(base_url, name, path, api_key=None):
    """POST /v1/load_lora_adapter; returns (HTTP status, body)."""
    local = Path(path)
    lora_path = str(local.resolve()) if local.exists() else str(path)
    return _post(base_url, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": lora_path}, api_key)


def unload_adapter(base_url, name, api_key=None):
    """POST /v1/unload_lora_adapter; returns (HTTP status, body)."""
    return _post(base_url, "/v1/unload_lora_adapter", {"lora_name": name}, api_key)


# --- chat ---

def chat(base_url, model, prompt, system=None, api_key=None, max_tokens=256, temperature=None, timeout=120):
    """One chat completion through the openai client; returns the reply text."""
    from openai import OpenAI

    client = OpenAI(base_url=_api_root(base_url) + "/v1", api_key=api_key or "EMPTY", timeout=timeout,
                    max_retries=0)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    kwargs = {"max_tokens": max_tokens}
    if temperature is not None:
        kwargs["temperature"] = temperature
    response = client.chat.completions.create(model=model, messages=messages, **kwargs)
    return response.choices[0].message.content or ""


def _api_key(env):
    if not ENV_NAME.match(env):
        raise InputError(f"{env!r} is not an environment variable name", field="api-key-env")
    return os.environ.get(env)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m deploy.vllm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="check that vLLM can serve a LoRA adapter")
    p.add_argument("adapter", help="PEFT adapter dir (adapter_config.json, adapter_model.safetensors)")
    p.add_argument("--max-lora-rank", type=int, help="the --max-lora-rank the server will use")
    p.add_argument("--base", help="local base model dir (default: the adapter's base_model_name_or_path)")
    p.add_argument("--strict", action="store_true", help="treat warnings as failures")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    for verb in ("serve-command", "serve"):
        p = sub.add_parser(verb, help="print or write the vLLM server command" if verb == "serve-command"
                           else "start vLLM with the model and adapters, serve until Ctrl-C")
        p.add_argument("--base", help="base model (HF id or local dir)")
        p.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH",
                       help="LoRA adapter, repeatable")
        p.add_argument("--merged", help="serve a merged model dir instead of base + adapters")
        p.add_argument("--served-model-name", help="name clients use for the base/merged model")
        p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
        p.add_argument("--port", type=int, default=8000)
        p.add_argument("--api-key-env", metavar="VAR", help="require an API key, read from this environment variable")
        p.add_argument("--max-lora-rank", type=int, help="override (default: smallest allowed >= the adapters' rank)")
        p.add_argument("--max-loras", type=int, help="adapters active per batch (default: the number given)")
        p.add_argument("--max-model-len", type=int, help="context length (default: --recipe's sequence_len, "
                       "else the model's)")
        p.add_argument("--recipe", help="the Axolotl recipe the adapters were trained with: --max-model-len "
                       "defaults to its sequence_len")
        p.add_argument("--allow-runtime-lora", action="store_true",
                       help="set VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (for load/unload)")
        p.add_argument("--skip-check", action="store_true", help="do not run `check` on the adapters")
        p.add_argument("--enforce-eager", action="store_true", help="vLLM's --enforce-eager: no torch.compile or "
                       "CUDA graphs, so the server starts in about half the time (23 vs 44 s on 2 CPU cores) and "
                       "decodes slower on a GPU; for CPU runs and quick checks")
        p.add_argument("--python", help="interpreter with vLLM (default: $VLLM_PYTHON or .cache/vllm/bin/python)")
        if verb == "serve":
            p.add_argument("--log", default="outputs/vllm/server.log", help="server log (default %(default)s)")
            p.add_argument("--timeout", type=int, default=300, help="seconds to wait for /health (default 300)")
        else:
            p.add_argument("-o", "--output", help="write an executable bash script here instead of printing")
            p.add_argument("--force", action="store_true", help="overwrite an existing output")

    for verb in ("load", "unload"):
        p = sub.add_parser(verb, help=f"{verb} a LoRA adapter on a running vLLM server "
                                      "(started with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)")
        p.add_argument("--base-url", default="http://127.0.0.1:8000", help="server URL (default %(default)s)")
        p.add_argument("name", help="adapter name")
        if verb == "load":
            p.add_argument("path", help="adapter dir as the server sees it")
        p.add_argument("--api-key-env", default="VLLM_API_KEY", help="env var holding the API key (default %(default)s)")

    p = sub.add_parser("chat", help="send one chat message through the openai client")
    p.add_argument("--base-url", default="http://127.0.0.1:8000", help="server URL (default %(default)s)")
    p.add_argument("--model", required=True, help="model or adapter name")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float)
    p.add_argument("--api-key-env", default="VLLM_API_KEY", help="env var holding the API key (default %(default)s)")
    p.add_argument("prompt")
    args = parser.parse_args(argv)

    if args.command == "check":
        result = check_adapter(args.adapter, args.max_lora_rank, args.base)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            verdict = "not servable by vLLM" if result["problems"] else "servable by vLLM"
            print(f"{args.adapter}: {verdict} (rank {result['rank']}, needs --max-lora-rank "
                  f"{result['needed_max_lora_rank']}; LoRA on {', '.join(result['modules']) or 'nothing'})")
            for problem in result["problems"]:
                print(f"  FAIL {problem}")
            for warning in result["warnings"]:
                print(f"  warn {warning}")
        return 1 if result["problems"] or (args.strict and result["warnings"]) else 0

    if args.command in ("serve-command", "serve"):
        if args.command == "serve-command" and args.output:
            check_output(args.output, args.force)
        max_model_len = args.max_model_len or (recipe_sequence_len(args.recipe) if args.recipe else None)
        if max_model_len is None and args.command == "serve-command":
            print("warning: no --max-model-len (or --recipe): vLLM reserves KV cache for the model's whole "
                  "context (131072 tokens for Llama 3.1), which does not fit beside the weights on a 24 GB card",
                  file=sys.stderr)
        extra = (["--max-model-len", str(max_model_len)] if max_model_len else []) + ["--enforce-eager"] * args.enforce_eager
        argv_, key_index, info = serve_argv(args.base, args.adapter, args.merged, args.host, args.port,
                                            args.api_key_env, args.served_model_name, args.max_lora_rank,
                                            check=not args.skip_check, extra=extra, python=args.python,
                                            max_loras=args.max_loras)
        if args.command == "serve":
            from deploy.vllm_server import vllm_python

            if args.python is None and vllm_python() is None:
                raise InputError("no vLLM found: run scripts/setup.sh (it installs .cache/vllm) or set VLLM_PYTHON")
            env = {}
            if key_index is not None:  # vLLM reads VLLM_API_KEY: the key stays out of `ps`
                env["VLLM_API_KEY"] = _api_key(args.api_key_env) or ""
                if not env["VLLM_API_KEY"]:
                    raise InputError(f"${args.api_key_env} is not set", field="api-key-env")
                del argv_[key_index - 1:key_index + 1]
            return serve(argv_, info, args.host, args.port, args.log, args.timeout, args.allow_runtime_lora, env)
        if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key_env:
            print(f"warning: --host {args.host} exposes the server without an API key (add --api-key-env VAR)",
                  file=sys.stderr)
        if args.allow_runtime_lora and not args.output:
            print("# run with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True in the environment", file=sys.stderr)
        if args.output:
            write_serve_script(args.output, argv_, key_index, args.api_key_env, args.allow_runtime_lora, args.force)
        else:
            print(shell_command(argv_, key_index))
        return 0

    if args.command in ("load", "unload"):
        key = _api_key(args.api_key_env)
        try:
            if args.command == "load":
                status, body = load_adapter(args.base_url, args.name, args.path, key)
            else:
                status, body = unload_adapter(args.base_url, args.name, key)
        except urllib.error.URLError as err:
            print(f"error: cannot reach {args.base_url}: {err.reason}", file=sys.stderr)
            return 1
        print(body.strip())
        if status >= 400:
            hint = (" (is the server running with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True?)"
                    if status in (404, 405) else "")
            print(f"error: HTTP {status}{hint}", file=sys.stderr)
            return 1
        return 0

    if args.command == "chat":
        from openai import APIConnectionError, OpenAIError

        try:
            print(chat(args.base_url, args.model, args.prompt, args.system, _api_key(args.api_key_env),
                       args.max_tokens, args.temperature))
        except APIConnectionError as err:
            print(f"error: cannot reach {args.base_url} ({err}): is the server running?", file=sys.stderr)
            return 1
        except OpenAIError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        return 0
    return 2


main = cli(main)

if __name__ == "__main__":
    sys.exit(main())
