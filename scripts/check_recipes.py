"""Check recipes offline, before any GPU time is spent on them.

For each recipe (default: every recipes/**/*.yml):
  - keys (scripts.recipe_schema): every key is one Axolotl 0.19 knows (top level, datasets[],
    fsdp_config, special_tokens); a typo is an error, with the closest known key;
  - Axolotl's own validation (axolotl.utils.config.validate_config, as `axolotl train` runs it on a
    single bf16-capable GPU, or 4 GPUs for DeepSpeed/FSDP recipes), then normalize_config and
    load_tokenizer with the base model replaced by its local stand-in (common.models.stand_in_for);
  - data: the dataset files exist (paths relative to the repo root) and their first records match
    the declared `type` and field mappings (chat_template: field_messages, role/content mappings,
    known roles, roles_to_train present; alpaca: instruction/output); the chat template resolves
    and renders every message of the first record; Axolotl's own prompt strategy tokenizes the
    records with trained (unmasked) tokens; records longer than sequence_len are reported;
  - LoRA targets exist: every name in lora_target_modules is a module of the base model's
    architecture (built from its config.json on the meta device: the local dir, the hub cache, or the
    stand-in); a warning lists the missing names and the model's linear layers (Phi-3 fuses q/k/v into
    qkv_proj and gate/up into gate_up_proj), an error if none exists;
  - the end of an assistant turn is trained: a chat template that closes turns with a special token
    other than eos_token (Phi-3: <|end|>, its eos <|endoftext|> comes once, after the last turn) needs
    eot_tokens, or Axolotl trains no turn end and the model is not taught the token serving stops on;
  - vLLM can serve the adapter: lora/qlora, no modules_to_save, no DoRA, lora_r in vLLM's ranks,
    LoRA only on projections vLLM replaces (Llama's; Phi-3's fused ones), no added tokens
    (special_tokens: only a pad token that is already in the vocabulary);
  - DeepSpeed JSON / FSDP settings: referenced files exist and parse; FSDP is version 2 and any
    accelerate config next to the recipe (accelerate/*.yaml) agrees with the recipe's fsdp_config;
  - repo conventions: output_dir and dataset_prepared_path under outputs/;
  - optimizer steps on the data, as Axolotl counts them (packing included), with tokens per step and
    warm-up steps: an error below --min-steps (default 20). --records N also counts them for N records
    like the recipe's data (its rows repeated): the steps a full-size dataset makes.
QLoRA recipes get a warning: merge the adapter into the unquantized (16-bit) base.

  python -m scripts.check_recipes [RECIPE ...] [--quiet | --verbose] [--min-steps N] [--records N]

Prints one line per problem ('file:line: field 'key': message'); exit 1 if any recipe has an error.
"""
import argparse
import contextlib
import copy
import json
import logging
import re
import sys
import types
from functools import lru_cache
from pathlib import Path

from common import ROOT, offline_defaults
from common.errors import InputError, cli
from common.io import read_jsonl
from common.models import stand_in_for
from common.run import Run
from deploy.vllm import ALLOWED_RANKS, FUSED_LORA_MODULES, lora_modules
from scripts.recipe_schema import Checker, Report, check_keys, validation_message

# what `axolotl train` would see on one H100 (multi-GPU recipes: 4 of them)
GPU_CAPABILITIES = {"bf16": True, "fp8": False, "tf32": True, "compute_capability": "sm_90"}
MULTI_GPU = 4
MIN_STEPS = 20              # optimizer steps below which a recipe barely moves from its warm-up
MIN_STEPS_COMMENT = re.compile(r"^#\s*check_recipes:\s*min_steps\s+(\d+)", re.MULTILINE)
FIRST_RECORDS = 5            # records checked field by field
TOKENIZED_RECORDS = 2000     # records run through Axolotl's prompt strategy (length / masking)
# Axolotl's default role names for chat_template datasets (prompt_strategies/chat_template.py)
AXOLOTL_ROLES = {"human": "user", "user": "user", "assistant": "assistant", "gpt": "assistant",
                 "system": "system", "tool": "tool"}
# keys whose value must match between a recipe's fsdp_config and an accelerate FSDP config
FSDP_SHARED = ("auto_wrap_policy", "transformer_layer_cls_to_wrap", "reshard_after_forward",
               "activation_checkpointing", "cpu_ram_efficient_loading", "offload_params",
               "state_dict_type")


def _repo_path(value):
    path = Path(str(value))
    return path if path.is_absolute() else ROOT / path


def _check_conventions(check, cfg):
    for key in ("output_dir", "dataset_prepared_path"):
        value = cfg.get(key)
        if value is None:
            if key == "output_dir":
                check.error(key, "missing (repo convention: outputs/<recipe>/...)")
            continue
        parts = Path(str(value)).parts
        if Path(str(value)).is_absolute() or not parts or parts[0] != "outputs":
            check.error(key, f"{value!r}: repo convention is a path under outputs/ (relative to the repo root)")


def _check_vllm(check, cfg, arch=None):
    """The adapter must be servable by vLLM as a LoRA module (deploy.vllm check applies the same rules)."""
    served = lora_modules(arch)
    adapter = cfg.get("adapter")
    if adapter not in ("lora", "qlora"):
        check.error("adapter", f"{adapter!r}: recipes train LoRA adapters (lora or qlora) that vLLM can serve")
    if cfg.get("lora_modules_to_save"):
        check.error("lora_modules_to_save", "vLLM cannot serve adapters with modules_to_save; "
                    "remove it (and any new tokens that made it necessary)")
    rank = cfg.get("lora_r")
    if rank is None:
        check.error("lora_r", "missing")
    elif not isinstance(rank, int) or rank not in ALLOWED_RANKS:
        check.error("lora_r", f"{rank!r} is not a rank vLLM serves (allowed: "
                    f"{', '.join(map(str, ALLOWED_RANKS))})")
    if cfg.get("peft_use_dora"):
        check.error("peft_use_dora", "vLLM cannot serve DoRA adapters")
    if cfg.get("lora_target_linear"):
        check.warn("lora_target_linear", "targets every linear layer; vLLM serves only "
                   f"{', '.join(served)} (list lora_target_modules instead)")
    targets = cfg.get("lora_target_modules")
    if isinstance(targets, str):
        targets = [targets]
    if not targets and not cfg.get("lora_target_linear"):
        check.error("lora_target_modules", "missing: list the projections to adapt")
    for module in targets or []:
        if module not in served:
            check.error("lora_target_modules", f"{module!r}: vLLM serves LoRA only on "
                        f"{', '.join(served)} for {arch if arch in FUSED_LORA_MODULES else 'Llama models'}")
    for key in ("tokens", "added_tokens_overrides"):
        if cfg.get(key):
            check.error(key, "new tokens grow the vocabulary: vLLM cannot serve such an adapter")
    special = cfg.get("special_tokens") or {}
    if isinstance(special, dict):
        for key in special:
            if key != "pad_token":
                check.error(f"special_tokens.{key}", "only pad_token may be set (to a token already in "
                            "the vocabulary); other special tokens change what the model is served with")
    if cfg.get("lora_bias") not in (None, "none", False):
        check.error("lora_bias", "vLLM serves only adapters without bias")


def _local_model(cfg):
    """The local model dir for the recipe's base_model (its stand-in, or the dir itself), or None."""
    base = cfg.get("base_model", "")
    local = stand_in_for(base)
    if local is None and _repo_path(base).is_dir():
        local = _repo_path(base)
    return local if local is not None and (Path(local) / "config.json").exists() else None


def _config_source(cfg):
    """(where the base model's config.json is read from, how it was found), or (None, why not): a local
    dir as is; a hub id from the hub cache when it is there (offline), else from its local stand-in
    (same architecture, shrunk: the same module names)."""
    base = str(cfg.get("base_model", ""))
    if (_repo_path(base) / "config.json").is_file():
        return str(_repo_path(base)), "the local model"
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(base, "config.json")
    except Exception:  # not a repo id huggingface_hub accepts
        cached = None
    if isinstance(cached, str):
        return str(Path(cached).parent), "the hub cache"
    local = _local_model(cfg)
    if local is not None:
        return str(local), f"its stand-in {Path(local).name}"
    return None, f"no config for {base!r} offline (not in the hub cache, no stand-in in common/models.py)"


@lru_cache(maxsize=None)
def model_modules(model_dir):
    """(architecture, every module name, linear layer names in model order without lm_head) of the model
    built from model_dir's config.json on the meta device: no weight is read or allocated."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    modules = dict(model.named_modules())
    linear = dict.fromkeys(name.rsplit(".", 1)[-1] for name, module in modules.items()
                           if isinstance(module, (torch.nn.Linear, Conv1D)))
    linear.pop("lm_head", None)
    return (config.architectures or [type(model).__name__])[0], tuple(n for n in modules if n), tuple(linear)


def _target_found(target, names):
    """PEFT's rule for a list entry: it names a module, or the end of its dotted name."""
    return any(name == target or name.endswith("." + target) for name in names)


def _check_targets(check, cfg):
    """lora_target_modules names modules of the base model's architecture; returns the architecture
    (None when its config cannot be read offline)."""
    source, how = _config_source(cfg)
    if source is None:
        check.report.notes.append(f"LoRA target modules not checked: {how}")
        return None
    try:
        arch, names, linear = model_modules(source)
    except Exception as err:  # an architecture transformers cannot build
        check.report.notes.append(f"LoRA target modules not checked: {source}: {type(err).__name__}: {err}")
        return None
    targets = cfg.get("lora_target_modules")
    if cfg.get("lora_target_linear") or not targets:
        return arch
    if isinstance(targets, str):  # PEFT matches a string as one regex over the full module names
        if not any(re.fullmatch(targets, name) for name in names):
            check.error("lora_target_modules", f"{targets!r} matches no module of {arch} (read from {how}); "
                        f"its linear layers: {', '.join(linear)}")
        return arch
    missing = [t for t in targets if not isinstance(t, str) or not _target_found(t, names)]
    if not missing:
        return arch
    shown, layers = ", ".join(map(str, missing)), f"its linear layers are {', '.join(linear)}"
    if len(missing) == len(targets):
        check.error("lora_target_modules", f"no module of {arch} (read from {how}) is named {shown}: "
                    f"PEFT finds no target; {layers}")
    else:
        check.warn("lora_target_modules", f"{shown} not in {arch} (read from {how}): LoRA adapts none of "
                   f"{'them' if len(missing) > 1 else 'it'}; {layers} (list those names instead)")
    return arch


def _check_distributed(check, recipe, cfg):
    ds = cfg.get("deepspeed")
    if ds is not None:
        path = _repo_path(ds)
        if not isinstance(ds, str):
            check.error("deepspeed", "expected a path to a DeepSpeed JSON file")
        elif not path.is_file():
            check.error("deepspeed", f"{ds}: no such file (paths are relative to the repo root)")
        else:
            try:
                ds_cfg = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                check.error("deepspeed", f"{ds}: invalid JSON: {err.msg} (line {err.lineno})")
            else:
                stage = (ds_cfg.get("zero_optimization") or {}).get("stage")
                if stage not in (0, 1, 2, 3):
                    check.error("deepspeed", f"{ds}: zero_optimization.stage must be 0-3, got {stage!r}")
                if cfg.get("load_in_4bit") and stage == 3:
                    check.warn("deepspeed", "QLoRA with ZeRO-3 needs bnb_4bit_quant_storage matching the "
                               "compute dtype (Axolotl sets it); prefer FSDP2 for sharded QLoRA")
        if cfg.get("fsdp_config") or cfg.get("fsdp"):
            check.error("deepspeed", "DeepSpeed and FSDP are mutually exclusive")
    fsdp = cfg.get("fsdp_config")
    if cfg.get("fsdp"):
        check.error("fsdp", "the `fsdp:` list is deprecated; use fsdp_version: 2 and fsdp_config")
    if fsdp is not None:
        if not isinstance(fsdp, dict):
            check.error("fsdp_config", "expected a mapping")
            return
        version = cfg.get("fsdp_version", fsdp.get("fsdp_version", fsdp.get("version")))
        if str(version) != "2":
            check.error("fsdp_version", f"{version!r}: Axolotl 0.19 deprecates FSDP1; set fsdp_version: 2")
        if cfg.get("gradient_checkpointing") and fsdp.get("activation_checkpointing"):
            check.warn("gradient_checkpointing", "with FSDP use fsdp_config.activation_checkpointing alone")
        mine = {k.removeprefix("fsdp_"): v for k, v in fsdp.items()}
        for acc_path in sorted((Path(recipe).parent / "accelerate").glob("*.y*ml")):
            _check_accelerate(check, acc_path, mine)


def _check_accelerate(check, acc_path, recipe_fsdp):
    from accelerate.commands.config.config_args import ClusterConfig

    try:
        acc = ClusterConfig.from_yaml_file(acc_path)
    except Exception as err:  # accelerate raises ValueError/TypeError for bad files
        check.error("fsdp_config", f"{acc_path.relative_to(ROOT) if acc_path.is_relative_to(ROOT) else acc_path}: "
                    f"accelerate cannot read it: {err}")
        return
    if str(acc.distributed_type) not in ("FSDP", "DistributedType.FSDP"):
        return
    theirs = {k.removeprefix("fsdp_"): v for k, v in (acc.fsdp_config or {}).items()}
    if str(theirs.get("version")) != "2":
        check.error("fsdp_config", f"{acc_path.name}: fsdp_version must be 2, got {theirs.get('version')!r}")
    for key in FSDP_SHARED:
        if key in recipe_fsdp and key in theirs and recipe_fsdp[key] != theirs[key]:
            check.error(f"fsdp_config.{key}", f"{recipe_fsdp[key]!r} here but {theirs[key]!r} in "
                        f"{acc_path.name}; the two launch paths must agree")


@contextlib.contextmanager
def _capture_axolotl_log(notes):
    """Keep Axolotl's console quiet; its warnings become notes of the report."""

    class Capture(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                message = record.getMessage().strip()
                if message and message not in notes:
                    notes.append(message)

    logger = logging.getLogger("axolotl")
    saved = (logger.handlers[:], logger.propagate)
    logger.handlers[:] = [Capture()]
    logger.propagate = False
    try:
        yield
    finally:
        logger.handlers[:], logger.propagate = saved


def _axolotl(check, cfg, multi_gpu):
    """Axolotl's validate_config; then normalize_config + load_tokenizer on the stand-in. Returns (cfg, tokenizer)."""
    offline_defaults()
    from axolotl.utils.config import normalize_cfg_datasets, normalize_config, validate_config
    from axolotl.utils.dict import DictDefault

    import torch

    from axolotl.utils.schemas.datasets import SFTDataset

    capabilities = {**GPU_CAPABILITIES, "n_gpu": MULTI_GPU if multi_gpu else 1}
    env = {"torch_version": str(torch.__version__).split("+", 1)[0]}
    with _capture_axolotl_log(check.report.notes):
        bad_dataset = False
        for i, ds in enumerate(cfg.get("datasets") or []):
            try:   # validate_config checks each dataset on its own first; name the entry in the error
                SFTDataset(**ds)
            except Exception as err:
                bad_dataset = True
                for key, message in validation_message(err):
                    check.error(f"datasets[{i}]" + (f".{key}" if key else ""), f"Axolotl rejects the dataset: {message}")
        if bad_dataset:
            return None, None
        try:
            valid = validate_config(DictDefault(copy.deepcopy(cfg)), capabilities=capabilities,
                                    env_capabilities=env)
        except Exception as err:  # pydantic ValidationError or ValueError from a validator
            for key, message in validation_message(err):
                check.error(key, f"Axolotl rejects the config: {message}")
            return None, None
        local = _local_model(cfg)
        if local is None:
            check.error("base_model", f"no local stand-in for {cfg.get('base_model')!r} "
                        "(common/models.py; run scripts/setup.sh to build them)")
            return valid, None
        valid.base_model = str(local)
        valid.base_model_config = None
        valid.tokenizer_config = None
        if isinstance(valid.deepspeed, str):
            valid.deepspeed = str(_repo_path(valid.deepspeed))
        try:
            normalize_config(valid)
            normalize_cfg_datasets(valid)
            from axolotl.loaders.tokenizer import load_tokenizer

            tokenizer = load_tokenizer(valid)
        except Exception as err:
            check.error("base_model", f"Axolotl cannot set up the model/tokenizer from the stand-in "
                        f"{local}: {type(err).__name__}: {err}")
            return valid, None
    plain = _plain_tokenizer(str(local))
    if len(tokenizer) != len(plain):
        check.error("special_tokens", f"the recipe adds {len(tokenizer) - len(plain)} token(s) to the "
                    "vocabulary; vLLM cannot serve such an adapter")
    pad = (cfg.get("special_tokens") or {}).get("pad_token")
    if pad is not None and pad not in plain.get_vocab():
        check.error("special_tokens.pad_token", f"{pad!r} is not in the base vocabulary")
    return valid, tokenizer


@lru_cache(maxsize=None)
def _plain_tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _check_records(check, i, ds, records, data_path):
    """First records vs the dataset's declared type and field mappings."""
    kind = str(ds.get("type", ""))
    key = f"datasets[{i}]"
    base = kind.split(":")[0]
    if base == "chat_template":
        field_messages = ds.get("field_messages") or "messages"
        mappings = dict(ds.get("message_property_mappings") or {})
        mappings.setdefault("role", ds.get("message_field_role") or "role")
        mappings.setdefault("content", ds.get("message_field_content") or "content")
        roles = ds.get("roles")
        known = ({src: dst for dst, srcs in roles.items() for src in srcs} if isinstance(roles, dict)
                 else AXOLOTL_ROLES)
        seen = set()
        for line, record in records[:FIRST_RECORDS]:
            where = f"{data_path}:{line}"
            if field_messages not in record:
                check.error(f"{key}.field_messages", f"{field_messages!r} not found in {where} "
                            f"(record keys: {', '.join(record) or 'none'})")
                return
            turns = record[field_messages]
            if not isinstance(turns, list) or not turns:
                check.error(f"{key}.field_messages", f"{where}: {field_messages!r} must be a non-empty list")
                return
            for n, turn in enumerate(turns):
                if not isinstance(turn, dict):
                    check.error(f"{key}.field_messages", f"{where}: {field_messages}[{n}] is not an object")
                    return
                for prop in ("role", "content"):
                    if mappings[prop] not in turn:
                        check.error(f"{key}.message_property_mappings.{prop}",
                                    f"messages have no {mappings[prop]!r} property in {where} "
                                    f"(message keys: {', '.join(turn) or 'none'})")
                        return
                role = turn[mappings["role"]]
                if role not in known:
                    check.error(f"{key}.roles", f"role {role!r} in {where} is not mapped "
                                f"(known: {', '.join(sorted(known))})")
                    return
                seen.add(known[role])
        wanted = ds.get("roles_to_train") or ["assistant"]
        mapped = {known.get(r, r) for r in wanted}
        if not mapped & seen:
            check.error(f"{key}.roles_to_train", f"{wanted} never occurs in {data_path} "
                        f"(roles found: {', '.join(sorted(seen))}): nothing would be trained")
    elif base == "alpaca":
        for line, record in records[:FIRST_RECORDS]:
            where = f"{data_path}:{line}"
            for prop, default in (("instruction", "instruction"), ("output", "output")):
                name = ds.get(f"field_{prop}") or default
                if not isinstance(record.get(name), str) or not record[name].strip():
                    check.error(f"{key}.type", f"alpaca records need a non-empty string {name!r}; "
                                f"{where} has keys {', '.join(record) or 'none'}")
                    return
            name = ds.get("field_input") or "input"
            if name in record and not isinstance(record[name], str):
                check.error(f"{key}.type", f"{where}: {name!r} must be a string")
                return
    else:
        check.warn(f"{key}.type", f"{kind!r}: field mappings not checked here (Axolotl's tokenization still runs)")


def _render_chat(check, i, ds, valid_cfg, tokenizer, record, data_path, line):
    """The chat template resolves and renders every message of one record."""
    from axolotl.utils.chat_templates import get_chat_template_from_config

    key = f"datasets[{i}]"
    try:
        template = get_chat_template_from_config(cfg=valid_cfg, ds_cfg=dict(ds), tokenizer=tokenizer)
    except Exception as err:
        check.error("chat_template", f"does not resolve: {err}")
        return
    field_messages = ds.get("field_messages") or "messages"
    mappings = dict(ds.get("message_property_mappings") or {"role": "role", "content": "content"})
    roles = ds.get("roles")
    known = {s: d for d, ss in roles.items() for s in ss} if isinstance(roles, dict) else AXOLOTL_ROLES
    messages = [{"role": known.get(t[mappings["role"]], t[mappings["role"]]),
                 "content": t[mappings["content"]]} for t in record[field_messages]]
    try:
        text = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False)
    except Exception as err:
        check.error("chat_template", f"fails to render {data_path}:{line}: {err}")
        return
    for m in messages:
        if str(m["content"]).strip() not in text:
            check.error(f"{key}.roles", f"the chat template drops a {m['role']!r} message of {data_path}:{line}")
            return


def _check_turn_end(check, i, ds, valid_cfg, tokenizer):
    """Axolotl trains the end of an assistant turn (train_on_eos / train_on_eot, default "turn") on
    eot_tokens, which default to the tokenizer's eos_token. A template that closes every turn with
    another special token (Phi-3: <|end|>; its eos <|endoftext|> is written once, after the last turn)
    then gets no turn end trained, only a lone eos after the last reply, while serving stops on the
    template's token: eot_tokens must name it."""
    from axolotl.utils.chat_templates import get_chat_template_from_config

    if valid_cfg.get("eot_tokens") or (ds.get("train_on_eot") or ds.get("train_on_eos") or "turn") == "none":
        return
    try:
        template = get_chat_template_from_config(cfg=valid_cfg, ds_cfg=dict(ds), tokenizer=tokenizer)
        reply = "Reply text that ends here"
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": reply},
             {"role": "user", "content": "Thanks"}, {"role": "assistant", "content": "Bye"}],
            chat_template=template, tokenize=False)
    except Exception:  # _render_chat reports templates that do not render
        return
    if reply not in text:
        return
    after = tokenizer.encode(text[text.index(reply) + len(reply):], add_special_tokens=False)
    special = {tid for tid, token in tokenizer.added_tokens_decoder.items() if token.special}
    if not after or after[0] not in special or after[0] == tokenizer.eos_token_id:
        return
    end, eos = tokenizer.convert_ids_to_tokens(after[0]), tokenizer.eos_token
    key = f"datasets[{i}].train_on_eot" if "train_on_eot" in ds else f"datasets[{i}].train_on_eos"
    check.warn(key, f"the chat template closes each assistant turn with {end!r}, not the eos_token {eos!r}, "
               f"and eot_tokens is unset: Axolotl trains no end of turn (only {eos!r} where the template "
               f"writes it), so the model is not taught to stop with {end!r} where serving stops; "
               f"add `eot_tokens: [\"{end}\"]` (top level)")


def _tokenize(check, i, ds, valid_cfg, tokenizer, records, data_path):
    """Axolotl's own prompt strategy on the records: trained tokens exist, lengths fit."""
    import datasets
    from axolotl.utils.data.wrappers import get_dataset_wrapper

    key = f"datasets[{i}]"
    rows = [r for _, r in records[:TOKENIZED_RECORDS]]
    kind = str(ds.get("type"))
    base, _, style = kind.partition(":")
    ds_cfg = valid_cfg.datasets[i]
    valid_cfg.dataset_num_proc = None  # in this process (datasets 4 runs num_proc=1 in a worker process)
    try:
        with _capture_axolotl_log(check.report.notes), quiet_datasets():
            wrapped, _ = get_dataset_wrapper(ds_cfg, tokenizer, valid_cfg, base, datasets.Dataset.from_list(rows),
                                             style or None)
            tokenized = list(wrapped)
    except Exception as err:
        check.error(f"{key}.type", f"Axolotl cannot tokenize {data_path} as {kind!r}: {type(err).__name__}: {err}")
        return None
    untrained = [n for n, ex in enumerate(tokenized, 1) if not any(l != -100 for l in ex["labels"])]
    too_long = [n for n, ex in enumerate(tokenized, 1) if len(ex["input_ids"]) > (valid_cfg.sequence_len or 2048)]
    if untrained:
        (check.error if len(untrained) == len(tokenized) else check.warn)(
            f"{key}.roles_to_train" if base == "chat_template" else "train_on_inputs",
            f"{len(untrained)} of {len(tokenized)} records of {data_path} have no trained token "
            f"(first: record {untrained[0]})")
    if too_long:
        check.warn("sequence_len", f"{len(too_long)} of {len(tokenized)} records of {data_path} are longer "
                   f"than {valid_cfg.sequence_len} tokens; Axolotl drops them (first: record {too_long[0]})")
    return tokenized


def optimizer_steps(valid_cfg, tokenized, num_gpus=1, total_records=None):
    """Optimizer steps, tokens per step and warm-up steps as Axolotl 0.19 computes them for `axolotl train`:
    its long/short-sample filter (handle_long_seq_in_dataset), process_datasets_for_packing, then
    calculate_total_num_steps (which the trainer gets as max_steps: with sample packing, bins of
    micro_batch_size x sequence_len tokens, drop_last) and its builder's warm-up rule. `tokenized` are
    Axolotl-tokenized rows; with total_records != len(tokenized) the count is for that many rows like them
    (the rows repeated or cut: an estimate for data of that size)."""
    import datasets
    import torch
    from axolotl.core.builders.base import TrainerBuilderBase
    from axolotl.utils.data.utils import handle_long_seq_in_dataset
    from axolotl.utils.dict import DictDefault
    from axolotl.utils.trainer import calculate_total_num_steps, process_datasets_for_packing

    cfg = DictDefault(copy.deepcopy(dict(valid_cfg)))
    cfg.batch_size = cfg.micro_batch_size * cfg.gradient_accumulation_steps * num_gpus  # normalize_config, N ranks
    cfg.dataset_num_proc = None   # in this process (see _tokenize)
    for key in ("total_num_tokens", "total_supervised_tokens", "sample_packing_eff_est"):
        cfg[key] = None
    rows = [{k: ex[k] for k in ("input_ids", "attention_mask", "labels") if k in ex} for ex in tokenized]
    total_records = total_records or len(rows)
    rows = [rows[i % len(rows)] for i in range(total_records)]
    with quiet_datasets(), _capture_axolotl_log([]):
        ds = handle_long_seq_in_dataset(datasets.Dataset.from_list(rows), cfg.sequence_len, cfg)
        ds, _ = process_datasets_for_packing(cfg, ds, None)
        torch.manual_seed(cfg.seed or 42)   # the packing sampler shuffles
        steps = calculate_total_num_steps(cfg, ds)
    kwargs = {}
    TrainerBuilderBase._configure_warmup_and_logging(types.SimpleNamespace(cfg=cfg), steps, kwargs)
    tokens = cfg.total_num_tokens * cfg.num_epochs
    return {"optimizer_steps": steps, "estimated": total_records != len(tokenized), "samples": len(ds),
            "epochs": cfg.num_epochs, "batch": cfg.batch_size, "num_gpus": num_gpus,
            "sample_packing": bool(cfg.sample_packing),
            "packing_efficiency": cfg.sample_packing_eff_est if cfg.sample_packing else None,
            "samples_per_step": round(len(ds) * cfg.num_epochs / steps, 1) if steps else None,
            "tokens_per_step": int(tokens / steps) if steps else None,
            "warmup_steps": int(kwargs.get("warmup_steps") or 0)}


def _min_steps(text, default):
    """A recipe may lower the floor with a comment line `# check_recipes: min_steps N (why)`."""
    match = MIN_STEPS_COMMENT.search(text)
    return int(match.group(1)) if match else default


def _check_steps(check, steps, floor):
    if steps["optimizer_steps"] < floor:
        check.error("num_epochs", f"trains only {steps['optimizer_steps']} optimizer step(s) on its data "
                    f"(floor {floor}): {steps['samples']} samples x {steps['epochs']} epoch(s) at "
                    f"{steps['samples_per_step']} samples per step"
                    + (" (sample packing puts several samples in each micro batch)" if steps["sample_packing"] else "")
                    + "; lower micro_batch_size / gradient_accumulation_steps, turn sample_packing off, add epochs "
                    "or data, or lower the floor (--min-steps, or `# check_recipes: min_steps N` in the recipe)")


@contextlib.contextmanager
def quiet_datasets():
    """datasets without logs or progress bars, and without fingerprint hashing: the records are an in-memory
    dataset nothing caches, and hashing a map's tokenizer costs ~3 s a map for a 262k-token vocabulary.
    Patches datasets' module globals while it runs: not for use from several threads at once."""
    import datasets
    from datasets import arrow_dataset, fingerprint

    hashing = fingerprint.update_fingerprint
    was = datasets.utils.logging.get_verbosity()
    progress = datasets.utils.logging.is_progress_bar_enabled()
    try:
        for module in (fingerprint, arrow_dataset):   # map() calls it by the name it imported
            module.update_fingerprint = lambda *args, **kwargs: fingerprint.generate_random_fingerprint()
        datasets.utils.logging.set_verbosity_error()
        datasets.utils.logging.disable_progress_bar()
        yield
    finally:
        fingerprint.update_fingerprint = arrow_dataset.update_fingerprint = hashing
        datasets.utils.logging.set_verbosity(was)
        if progress:
            datasets.utils.logging.enable_progress_bar()


def check_recipe(recipe, min_steps=MIN_STEPS, record_count=None):
    """Check one recipe; returns a Report (errors, warnings, notes; steps: optimizer_steps() on its data or
    None; steps_at_size: the same for record_count records like them, when given)."""
    recipe = Path(recipe)
    shown = recipe.relative_to(ROOT) if recipe.resolve().is_relative_to(ROOT) and recipe.is_absolute() else recipe
    report = Report(shown)
    if not recipe.exists():
        raise FileNotFoundError(f"{recipe}: no such recipe")
    try:
        run = Run.read(recipe)
    except InputError as err:  # invalid UTF-8 or YAML
        report.errors.append(InputError(err.message, shown, err.line))
        return report
    text, cfg = run.text, run.cfg
    check = Checker(shown, report, run.lines)
    if not isinstance(cfg, dict):
        report.errors.append(InputError("a recipe must be a YAML mapping", shown))
        return report
    for required in ("base_model", "datasets"):
        if required not in cfg:
            check.error(required, "missing")
    if "base_model" in cfg and not isinstance(cfg["base_model"], str):
        check.error("base_model", f"expected a model id or path, got {type(cfg['base_model']).__name__}")
    if "datasets" in cfg and not isinstance(cfg["datasets"], list):
        check.error("datasets", "expected a list of datasets (- path: ..., type: ...), "
                    f"got {type(cfg['datasets']).__name__}")
    if report.errors:
        return report

    check_keys(check, cfg)
    _check_conventions(check, cfg)
    arch = _check_targets(check, cfg)
    _check_vllm(check, cfg, arch)
    _check_distributed(check, recipe, cfg)
    if cfg.get("adapter") == "qlora" or cfg.get("load_in_4bit"):
        check.warn("adapter", "QLoRA: merge the adapter into the unquantized 16-bit base "
                   "(python -m deploy.merge --base <16-bit model dir>), never into the 4-bit one")

    data = []
    for i, ds in enumerate(cfg.get("datasets") or []):
        if not isinstance(ds, dict) or "path" not in ds:
            check.error(f"datasets[{i}].path", "missing")
            continue
        if Path(str(ds["path"])).is_absolute():
            check.error(f"datasets[{i}].path", "must be relative to the repo root (Axolotl runs from there)")
        path = _repo_path(ds["path"])
        if not path.is_file() and Path(str(ds["path"])).parts[:1] == ("outputs",):
            check.warn(f"datasets[{i}].path", f"{ds['path']} is generated at run time and not there yet: "
                       "data checks skipped")
            continue
        if not path.is_file():
            check.error(f"datasets[{i}].path", f"{ds['path']}: no such file (paths are relative to the repo root)")
            continue
        try:
            records = list(read_jsonl(path))
        except InputError as err:
            check.error(f"datasets[{i}].path", str(err))
            continue
        if not records:
            check.error(f"datasets[{i}].path", f"{ds['path']} has no records")
            continue
        before = len(report.errors)
        _check_records(check, i, ds, records, ds["path"])
        data.append((i, ds, records, len(report.errors) == before))

    multi_gpu = bool(cfg.get("deepspeed") or cfg.get("fsdp_config"))
    valid, tokenizer = _axolotl(check, cfg, multi_gpu)
    if tokenizer is None:
        return report
    all_tokenized, total = [], 0
    for i, ds, records, fields_ok in data:
        if not fields_ok:
            continue
        if str(ds.get("type", "")).split(":")[0] == "chat_template":
            line, record = records[0]
            _render_chat(check, i, ds, valid, tokenizer, record, ds["path"], line)
            _check_turn_end(check, i, ds, valid, tokenizer)
        tokenized = _tokenize(check, i, ds, valid, tokenizer, records, ds["path"])
        if tokenized is not None:
            all_tokenized += tokenized
            total += len(records)
    if all_tokenized and report.ok and len(data) == len(cfg.get("datasets") or []):
        num_gpus = MULTI_GPU if multi_gpu else 1
        report.steps = optimizer_steps(valid, all_tokenized, num_gpus, total)
        _check_steps(check, report.steps, _min_steps(text, min_steps))
        if record_count:
            report.steps_at_size = optimizer_steps(valid, all_tokenized, num_gpus, record_count)
    return report


def default_recipes():
    return sorted((ROOT / "recipes").glob("**/*.yml"))


def print_report(report, stream=None, quiet=False, verbose=False):
    stream = stream or sys.stdout
    for err in report.errors:
        print(f"error: {err}", file=stream)
    if not quiet:
        for warning in report.warnings:
            print(f"warning: {warning}", file=stream)
    if verbose:
        for note in report.notes:
            print(f"note: {report.recipe}: axolotl says: {note.splitlines()[0]}", file=stream)
    for st in filter(None, (report.steps, report.steps_at_size)):
        print(f"steps: {report.recipe}: {'~' if st['estimated'] else ''}{st['optimizer_steps']} optimizer steps "
              f"({st['samples']} samples x {st['epochs']} epochs, batch {st['batch']}"
              + (f" over {st['num_gpus']} GPUs" if st["num_gpus"] > 1 else "")
              + (f", packed at {st['packing_efficiency']:.0%} efficiency" if st["sample_packing"] else ", unpacked")
              + f"), {st['samples_per_step']} samples and {st['tokens_per_step']} tokens per step, "
              f"{st['warmup_steps']} warm-up steps", file=stream)
    status = "ok" if report.ok else f"FAILED ({len(report.errors)} error(s))"
    print(f"{status}: {report.recipe}", file=stream)


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m scripts.check_recipes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="*", help="recipe files (default: recipes/**/*.yml)")
    parser.add_argument("--quiet", action="store_true", help="print errors only")
    parser.add_argument("--verbose", action="store_true", help="also print Axolotl's own warnings")
    parser.add_argument("--min-steps", type=int, default=MIN_STEPS,
                        help="fail a recipe that trains fewer optimizer steps on its data (default %(default)s; "
                        "a recipe lowers it for itself with a line `# check_recipes: min_steps N`)")
    parser.add_argument("--records", type=int, metavar="N",
                        help="also count the steps for N records like the recipe's data (its rows repeated): "
                        "what a full-size dataset makes")
    args = parser.parse_args(argv)
    if args.records is not None and args.records < 1:
        parser.error("--records must be at least 1")
    offline_defaults()
    recipes = [Path(r) for r in args.recipes] or default_recipes()
    failed = 0
    for recipe in recipes:
        report = check_recipe(recipe, args.min_steps, args.records)
        print_report(report, quiet=args.quiet, verbose=args.verbose)
        failed += not report.ok
    print(f"{len(recipes) - failed} of {len(recipes)} recipe(s) ok")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
