"""Untrusted files: weights are read only from safetensors (pickle needs an explicit flag, and a poisoned
pickle is never executed), remote code is never trusted, no secret sits in a recipe or leaks into a run's
config or log, generated Modelfiles and shell commands cannot be injected into, servers bind 127.0.0.1 by
default, and merge/export refuse mismatched, truncated or unsupported inputs before writing anything.

Covered elsewhere and not repeated here: eval's --allow-pickle for adapters and model dirs
(test_eval_models.test_pickle_weights_refused_unless_allowed, test_pickle_adapter_loads_only_when_allowed),
deploy.hub leaving pickles out of a staged upload (test_deploy_hub.test_pickle_files), secret redaction in
model cards (test_deploy_hub.test_secrets_in_the_recipe_are_redacted), Modelfile values that try to close
their quotes (test_deploy_ollama.test_injection_or_lossy_values_are_refused, test_tricky_values_round_trip,
test_modelfile_parser_matches_ollama_rules), hostile adapter names and paths in the vLLM command and
script (test_deploy_vllm.test_serve_command_quotes_hostile_names, test_serve_script_runs_with_the_exact_argv),
merge refusing a base of another model or with other shapes and a truncated adapter
(test_merge.test_merge_refuses_mismatched_base_before_writing, test_merge_rejects_truncated_safetensors),
GGUF export of another architecture (test_gguf.test_unsupported_model_fails_before_writing).
"""
import json
import os
import pickle
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from common import ROOT
from common.errors import InputError
from deploy import gguf, hub, merge, ollama, vllm
from eval import _models
from scripts import cpu_run
from tests.helpers import make_adapter

FAKE_TOKEN = "hf_UntrustedTestToken0123456789abcdefXYZ"
SKIP_DIRS = {".git", ".cache", "outputs", "__pycache__", ".pytest_cache", ".hypothesis", "node_modules"}


def repo_files(*suffixes):
    """The repo's own files with these suffixes (not the venv, caches, run outputs or .git)."""
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            if Path(name).suffix in suffixes:
                yield (Path(folder) / name).relative_to(ROOT)


class Poison:
    """Unpickling this creates the marker file: proof that a pickle was loaded (and could have run code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def poison(path, marker):
    path.write_bytes(pickle.dumps(Poison(marker)))
    return path


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tinyllama):
    return make_adapter(tinyllama, tmp_path_factory.mktemp("adapter") / "adapter", targets=("q_proj", "v_proj"), r=4)


def copy_model(src, dst, link_weights=True):
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix == ".safetensors" and link_weights:
            (dst / f.name).symlink_to(f)
        else:
            shutil.copy2(f, dst / f.name)
    return dst


# --- pickle weights need an explicit flag; a poisoned pickle is never unpickled ---------------------

def test_merge_and_export_refuse_a_pickle_adapter(tmp_path, tinyllama, adapter):
    marker = tmp_path / "pwned"
    pickled = tmp_path / "pickled-adapter"
    pickled.mkdir()
    shutil.copy2(adapter / "adapter_config.json", pickled)
    poison(pickled / "adapter_model.bin", marker)
    with pytest.raises(InputError, match="pickle"):
        merge.merge(tinyllama, pickled, tmp_path / "merged")
    with pytest.raises(InputError, match="pickle"):
        gguf.export_adapter(pickled, tinyllama, tmp_path / "lora.gguf")
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pickled-adapter"]


def test_merge_and_export_refuse_a_pickle_base(tmp_path, tinyllama, adapter):
    marker = tmp_path / "pwned"
    base = tmp_path / "pickled-base"
    base.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(tinyllama / name, base)
    poison(base / "pytorch_model.bin", marker)
    with pytest.raises(InputError, match="only safetensors weights are read"):
        merge.merge(base, adapter, tmp_path / "merged")
    with pytest.raises(InputError, match="only safetensors weights are read"):
        gguf.export_model(base, tmp_path / "m.gguf")
    with pytest.raises(InputError, match="--allow-pickle"):  # eval loads HF dirs only with the flag
        _models.check_model_dir(base)
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pickled-base"]


def test_hub_never_unpickles_even_with_allow_pickle(tmp_path, adapter, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    marker = tmp_path / "pwned"
    run = copy_model(adapter, tmp_path / "run", link_weights=False)
    poison(run / "training_args.bin", marker)
    upload = ["upload", str(run), "--repo-id", "someone/x", "--dry-run"]
    assert hub.main([*upload, "--stage-dir", str(tmp_path / "a")]) == 0
    assert not (tmp_path / "a" / "training_args.bin").exists()
    assert hub.main([*upload, "--allow-pickle", "--stage-dir", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "training_args.bin").exists()  # staged byte for byte, never loaded
    assert not marker.exists()
    assert FAKE_TOKEN not in capsys.readouterr().out


# --- remote code is never trusted ------------------------------------------------------------------

TRUST = re.compile(r"""["']?trust_remote_code["']?\s*[:=]\s*["']?(?:true|yes|on|1)\b""", re.IGNORECASE)
TRUST_FLAG = re.compile("--trust" + r"-remote-code\b")


def test_repo_never_enables_trust_remote_code():
    flag = "trust" + "_remote_code"
    for enabled in (f"{flag}=True", f"{flag}: true", f'"{flag}": true', f"{flag} = 1"):
        assert TRUST.search(enabled), enabled
    assert not TRUST.search(f"{flag}=False") and TRUST_FLAG.search("vllm serve m --" + "trust-remote-code")
    found, scanned = [], 0
    for rel in repo_files(".py", ".yml", ".yaml", ".json", ".sh", ".md", ".jinja", ".cfg", ".toml", ".ini"):
        if rel == Path(__file__).relative_to(ROOT):
            continue
        scanned += 1
        text = (ROOT / rel).read_text(encoding="utf-8", errors="replace")
        found += [f"{rel}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}" for m in TRUST.finditer(text)]
        found += [f"{rel}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}" for m in TRUST_FLAG.finditer(text)]
    assert scanned > 50 and found == []


def test_no_recipe_sets_trust_remote_code():
    for recipe in sorted((ROOT / "recipes").rglob("*.y*ml")):
        cfg = yaml.safe_load(recipe.read_text(encoding="utf-8"))
        if isinstance(cfg, dict):
            assert not cfg.get("trust_remote_code"), recipe


# --- no secrets in recipes, configs or logs ---------------------------------------------------------

SECRET_VALUES = re.compile(r"\b(?:hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|ghp_[A-Za-z0-9]{20,}|"
                           r"github_pat_[A-Za-z0-9_]{20,}|AKIA[0-9A-Z]{16}|xox[abprs]-[A-Za-z0-9-]{10,})\b")
SECRET_KEYS = re.compile(r"(?i)^(?:.*_)?(?:api_?key|token|access_token|auth_token|secret|password|passwd)$")
NOT_SECRETS = {"pad_token", "eos_token", "bos_token", "unk_token", "sep_token", "cls_token", "mask_token"}


def secret_keys(data, where=""):
    """Keys that name a credential and hold a value, anywhere in a parsed YAML/JSON document."""
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{where}.{key}" if where else str(key)
            if SECRET_KEYS.match(str(key)) and str(key) not in NOT_SECRETS and value not in (None, "", False):
                yield path
            yield from secret_keys(value, path)
    elif isinstance(data, list):
        for i, item in enumerate(data):
            yield from secret_keys(item, f"{where}[{i}]")


def test_no_token_or_secret_in_any_recipe():
    checked = 0
    for path in sorted((ROOT / "recipes").rglob("*")):
        if not path.is_file() or path.stat().st_size > 20_000_000:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        assert not SECRET_VALUES.search(text), f"{path}: {SECRET_VALUES.search(text).group(0)[:8]}..."
        if path.suffix in (".yml", ".yaml", ".json"):
            data = yaml.safe_load(text) if path.suffix != ".json" else json.loads(text)
            assert list(secret_keys(data)) == [], path
            checked += 1
    assert checked >= 10
    # the scanners do find what they look for
    assert SECRET_VALUES.search(f"hub_token: {FAKE_TOKEN}")
    assert list(secret_keys({"wandb_api_key": "x", "special_tokens": {"pad_token": "<pad>"}, "hub_token": "y"})) == [
        "wandb_api_key", "hub_token"]


def test_cpu_run_config_and_dry_run_never_hold_the_token(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    data = ROOT / "recipes" / "tinyllama-qa" / "data" / "train.messages.jsonl"
    config = cpu_run.prepare_run(ROOT / "recipes" / "quickstart" / "lora-135m.yml", dataset=data, eval_dataset=data,
                                 max_steps=1, output_dir=tmp_path / "run")
    assert config.exists() and FAKE_TOKEN not in config.read_text()
    cpu_run.main([str(ROOT / "recipes" / "tinyllama-qa" / "qlora-1.1b.yml"), "--dry-run"])
    captured = capsys.readouterr()
    assert FAKE_TOKEN not in captured.out + captured.err


def test_cpu_run_train_log_never_holds_the_token(tmp_path, monkeypatch):
    """A real launch (accelerate + Axolotl) that stops at its data: its config and train.log hold no token."""
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    bad = tmp_path / "no_messages.jsonl"
    bad.write_text('{"text": "no messages field"}\n')
    config = cpu_run.prepare_run(ROOT / "recipes" / "quickstart" / "lora-135m.yml", dataset=bad, eval_dataset=bad,
                                 max_steps=1, output_dir=tmp_path / "run")
    assert cpu_run.train(config, tmp_path / "run" / "train.log") != 0
    log = (tmp_path / "run" / "train.log").read_text()
    assert "axolotl" in log.lower() and FAKE_TOKEN not in log
    assert FAKE_TOKEN not in config.read_text()


# --- generated Modelfiles and commands cannot be injected into --------------------------------------

def test_modelfile_refuses_paths_and_names_that_would_add_directives(tmp_path, tinyllama, capsys):
    evil = tmp_path / "m.gguf\nSYSTEM pwned\nFROM "
    evil.write_bytes(b"GGUF")
    out = tmp_path / "Modelfile"
    for args in (["--gguf", str(evil)], ["--base", "llama3.1:8b\nSYSTEM pwned"],
                 ["--base", str(tmp_path / "base.gguf"), "--adapter", str(evil)]):
        (tmp_path / "base.gguf").write_bytes(b"GGUF")
        with pytest.raises(SystemExit) as exc:
            ollama.main([*args, "--model", str(tinyllama), "-o", str(out)])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and "quote or control character" in err and "Traceback" not in err
        assert not out.exists()


def test_ollama_create_command_is_shell_quoted(tmp_path, tinyllama, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no ollama binary: the command is printed
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    out = tmp_path / "dir with 'quotes' and $(touch pwned)" / "Modelfile"
    out.parent.mkdir()
    name = "vex; touch pwned"
    assert ollama.main(["--gguf", str(tmp_path / "m.gguf"), "--model", str(tinyllama), "-o", str(out),
                        "--create", name]) == 0
    printed = capsys.readouterr().err.split("to create the model run:\n", 1)[1].strip().splitlines()[0]
    assert shlex.split(printed) == ["ollama", "create", name, "-f", str(out)]


def test_vllm_merged_command_with_a_hostile_path_round_trips(tmp_path, tinyllama, capsys):
    merged = copy_model(tinyllama, tmp_path / "merged $(touch pwned); `id` 'x'")
    assert vllm.main(["serve-command", "--merged", str(merged), "--served-model-name", "a b; rm -rf /"]) == 0
    argv = shlex.split(capsys.readouterr().out)
    assert argv[3:5] == ["--model", str(merged.resolve())]
    assert argv[argv.index("--served-model-name") + 1] == "a b; rm -rf /"
    assert "--trust-remote-code" not in argv


# --- servers bind 127.0.0.1 by default --------------------------------------------------------------

def test_vllm_serve_command_binds_localhost_by_default(tmp_path, tinyllama, adapter, capsys):
    for args in (["--merged", str(tinyllama)], ["--base", str(tinyllama), "--adapter", f"mine={adapter}"]):
        assert vllm.main(["serve-command", *args]) == 0
        captured = capsys.readouterr()
        argv = shlex.split(captured.out)
        assert argv[argv.index("--host") + 1] == "127.0.0.1" and "without an API key" not in captured.err
        script = tmp_path / "serve.sh"
        assert vllm.main(["serve-command", *args, "-o", str(script), "--force"]) == 0
        assert "--host 127.0.0.1" in script.read_text() and "0.0.0.0" not in script.read_text()
    argv = vllm.serve_argv(merged=str(tinyllama), check=False)[0]  # the function's own default too
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    # binding elsewhere without an API key is allowed, with a warning
    assert vllm.main(["serve-command", "--merged", str(tinyllama), "--host", "0.0.0.0"]) == 0
    assert "exposes the server without an API key" in capsys.readouterr().err


def test_nothing_in_the_repo_binds_all_interfaces_or_starts_a_server():
    """Only deploy/vllm_server.py starts a server (vLLM, --host 127.0.0.1 unless told otherwise)."""
    import inspect

    from deploy.vllm_server import Server

    assert inspect.signature(Server).parameters["host"].default == "127.0.0.1"
    found = []
    starts_server = re.compile(r"HTTPServer\(|serve_forever|uvicorn|llama_cpp\.server|socketserver|\.bind\(")
    for rel in repo_files(".py", ".sh", ".md", ".yml", ".yaml", ".json"):
        if rel.parts[0] == "tests" or rel.as_posix() == "deploy/vllm_server.py":
            continue  # tests start local servers, on 127.0.0.1, to talk to; vllm_server is the one launcher
        text = (ROOT / rel).read_text(encoding="utf-8", errors="replace")
        if "0.0.0.0" in text:
            found.append(f"{rel}: 0.0.0.0")
        if rel.suffix == ".py" and starts_server.search(text):
            found.append(f"{rel}: {starts_server.search(text).group(0)}")
    assert found == []


# --- merge and export refuse bad inputs before writing anything ------------------------------------

@pytest.fixture
def truncated_base(tmp_path, sharded_base):
    """The sharded base with its second shard cut short (as by an interrupted download)."""
    base = copy_model(sharded_base, tmp_path / "truncated-base")
    shard = sorted(base.glob("model-*.safetensors"))[1]
    data = shard.read_bytes()
    shard.unlink()
    shard.write_bytes(data[: len(data) * 2 // 3])
    return base


def outputs(folder):
    return sorted(p.name for p in folder.iterdir() if p.name not in ("truncated-base", "adapter", "model", "lora"))


def test_merge_refuses_a_truncated_base_shard_before_writing(tmp_path, truncated_base, adapter, capsys):
    with pytest.raises(SystemExit) as exc:
        merge.main(["--base", str(truncated_base), "--adapter", str(adapter), "-o", str(tmp_path / "merged")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "truncated or corrupt safetensors file" in err and "Traceback" not in err
    assert outputs(tmp_path) == []


def test_gguf_refuses_a_truncated_base_shard_or_adapter_before_writing(tmp_path, truncated_base, sharded_base,
                                                                       adapter, capsys):
    with pytest.raises(SystemExit) as exc:
        gguf.main([str(truncated_base), "-o", str(tmp_path / "m.gguf")])
    assert exc.value.code == 2 and "truncated or corrupt safetensors file" in capsys.readouterr().err
    lora = copy_model(adapter, tmp_path / "lora", link_weights=False)
    weights = lora / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(SystemExit) as exc:
        gguf.main([str(sharded_base), "--adapter", str(lora), "-o", str(tmp_path / "lora.gguf")])
    assert exc.value.code == 2 and "truncated or corrupt safetensors file" in capsys.readouterr().err
    assert outputs(tmp_path) == []


def test_gguf_adapter_for_other_shapes_is_refused_before_writing(tmp_path, tinyllama, adapter):
    reshaped = copy_model(adapter, tmp_path / "lora", link_weights=False)
    tensors = load_file(reshaped / "adapter_model.safetensors")
    key = next(k for k in tensors if "lora_A" in k)
    tensors[key] = torch.zeros(tensors[key].shape[0], 32)  # as if trained on a model with hidden size 32
    save_file(tensors, reshaped / "adapter_model.safetensors")
    with pytest.raises(InputError, match="does not match base weight"):
        gguf.export_adapter(reshaped, tinyllama, tmp_path / "lora.gguf")
    assert outputs(tmp_path) == []


def _llama31_with(tmp_path, llama31, edit):
    model = copy_model(llama31, tmp_path / "model")
    tj = json.loads((model / "tokenizer.json").read_text(encoding="utf-8"))
    edit(tj)
    (model / "tokenizer.json").write_text(json.dumps(tj), encoding="utf-8")
    return model


def test_gguf_refuses_an_unknown_bpe_pre_tokenizer_before_writing(tmp_path, llama31):
    def gpt2_split(tj):  # a byte-level BPE whose split regex llama.cpp would not reproduce
        tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = \
            r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
    model = _llama31_with(tmp_path, llama31, gpt2_split)
    with pytest.raises(InputError, match=r"unknown BPE pre-tokenizer \['Split', 'ByteLevel'\]") as info:
        gguf.export_model(model, tmp_path / "m.gguf")
    assert info.value.field == "pre_tokenizer"
    assert outputs(tmp_path) == []  # not even a temporary file: the tokenizer is checked first


def test_gguf_refuses_an_unsupported_tokenizer_model_before_writing(tmp_path, llama31):
    model = _llama31_with(tmp_path, llama31, lambda tj: tj["model"].update(type="Unigram"))
    with pytest.raises(InputError, match="unsupported tokenizer model Unigram"):
        gguf.export_model(model, tmp_path / "m.gguf")
    (model / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match="tokenizer.json:1: invalid JSON"):
        gguf.export_model(model, tmp_path / "m.gguf")
    (model / "tokenizer.json").unlink()
    with pytest.raises(InputError, match="no tokenizer.json or tokenizer.model"):
        gguf.export_model(model, tmp_path / "m.gguf")
    assert outputs(tmp_path) == []


def test_corrupt_shard_index_or_header_is_an_input_error(tmp_path, sharded_base, adapter):
    base = copy_model(sharded_base, tmp_path / "truncated-base")
    index = base / "model.safetensors.index.json"
    good = index.read_text()
    index.write_text(json.dumps({"weight_map": ["model-00001.safetensors"]}))
    with pytest.raises(InputError, match="invalid shard index"):
        merge.merge(base, adapter, tmp_path / "merged")
    index.write_text(good)
    shard = sorted(base.glob("model-*.safetensors"))[0]
    header = json.dumps({"x": {"dtype": "F32", "shape": [1]}}).encode()  # no data_offsets
    shard.unlink()
    shard.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(InputError, match="corrupt safetensors header"):
        gguf.export_model(base, tmp_path / "m.gguf")
    assert outputs(tmp_path) == []
