"""deploy.hub: offline dry runs stage exactly the files to publish, with a model card whose metadata
huggingface_hub reads back, and never the token."""
import json
import subprocess
import sys

import pytest
import torch
from huggingface_hub import ModelCard
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from common import ROOT
from deploy import hub

FAKE_TOKEN = "hf_FakeTokenForTests0123456789abcdef"
RECIPE = ROOT / "recipes" / "quickstart" / "lora-135m.yml"


@pytest.fixture(autouse=True)
def token_env(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)


@pytest.fixture(scope="module")
def adapter(tinyllama, tmp_path_factory):
    """An Axolotl-like output dir: adapter, tokenizer, a pickle of training args, a checkpoint folder."""
    out = tmp_path_factory.mktemp("run") / "adapter"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tinyllama))
    get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])).save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(tinyllama)).save_pretrained(str(out))
    (out / "training_args.bin").write_bytes(b"\x80\x04pickle")
    (out / "checkpoint-10").mkdir()
    (out / "checkpoint-10" / "optimizer.pt").write_bytes(b"x")
    return out


@pytest.fixture
def report(tmp_path):
    path = tmp_path / "task.json"
    path.write_text(json.dumps({"task": "qa", "records": 20, "runs": [
        {"label": "base", "keyword_recall": 0.412, "exact_match": 0.1},
        {"label": "tuned", "keyword_recall": 0.738, "exact_match": 0.35}]}))
    return path


def all_bytes(folder):
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_dry_run_stages_adapter_with_card(adapter, report, tmp_path, capsys):
    stage = tmp_path / "stage"
    code = hub.main(["upload", str(adapter), "--repo-id", "someone/qa-lora", "--recipe", str(RECIPE),
                     "--eval-report", str(report), "--dry-run", "--stage-dir", str(stage)])
    out = capsys.readouterr().out
    assert code == 0
    assert sorted(p.name for p in stage.iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", "chat_template.jinja",
        "tokenizer.json", "tokenizer_config.json"]
    assert "left out training_args.bin: pickle file" in out and "left out checkpoint-10/" in out
    assert "dry run: nothing uploaded" in out

    card = ModelCard.load(stage / "README.md")
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"  # the recipe's local SmolLM2
    assert card.data.library_name == "peft"
    assert card.data.license == "apache-2.0"
    assert {"axolotl", "lora", "peft"} <= set(card.data.tags)
    assert card.data.pipeline_tag == "text-generation"
    assert f"Recipe: `{RECIPE}`" in card.text and "lora_r**: 16" in card.text
    assert "`outputs/quickstart/data/train.jsonl` (type `chat_template`)" in card.text
    assert "| runs.tuned.keyword_recall | 0.738 |" in card.text and "| records | 20 |" in card.text
    assert "AutoPeftModelForCausalLM.from_pretrained(\"someone/qa-lora\")" in card.text
    # the staged adapter points at the Hub base, not at a path on this machine
    config = json.loads((stage / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (stage / "adapter_model.safetensors").read_bytes() == (adapter / "adapter_model.safetensors").read_bytes()
    # no token anywhere
    assert FAKE_TOKEN.encode() not in all_bytes(stage) and FAKE_TOKEN not in out


def test_secrets_in_the_recipe_are_redacted(adapter, tmp_path, capsys):
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(RECIPE.read_text() + "hub_token: hf_ShouldNotBePublished123\nwandb_api_key: abc123secret\n")
    stage = tmp_path / "stage"
    assert hub.main(["upload", str(adapter), "--repo-id", "someone/x", "--recipe", str(recipe),
                     "--dry-run", "--stage-dir", str(stage)]) == 0
    text = (stage / "README.md").read_text()
    assert "hf_ShouldNotBePublished123" not in text and "abc123secret" not in text
    assert "hub_token: <redacted>" in text


def test_token_in_a_staged_file_is_refused(adapter, tmp_path, capsys):
    leaky = tmp_path / "leaky"
    leaky.mkdir()
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        (leaky / f).write_bytes((adapter / f).read_bytes())
    (leaky / "notes.txt").write_text(f"login with {FAKE_TOKEN}\n")
    stage = tmp_path / "stage"
    with pytest.raises(SystemExit) as exc:
        hub.main(["upload", str(leaky), "--repo-id", "someone/x", "--dry-run", "--stage-dir", str(stage)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "token appears" in err and FAKE_TOKEN not in err
    assert not stage.exists()


def test_pickle_files(adapter, tmp_path, capsys):
    stage = tmp_path / "with-pickle"
    assert hub.main(["upload", str(adapter), "--repo-id", "someone/x", "--allow-pickle", "--dry-run",
                     "--stage-dir", str(stage)]) == 0
    assert (stage / "training_args.bin").exists()
    only_pickle = tmp_path / "pickled"
    only_pickle.mkdir()
    (only_pickle / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
    (only_pickle / "adapter_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(SystemExit) as exc:
        hub.main(["upload", str(only_pickle), "--repo-id", "someone/x", "--dry-run"])
    assert exc.value.code == 2 and "only pickle weights: adapter_model.bin" in capsys.readouterr().err


def test_gguf_and_merged_model_cards(tmp_path, tinyllama, capsys):
    gguf = tmp_path / "model-q8_0.gguf"
    gguf.write_bytes(b"GGUF")
    stage = tmp_path / "gguf-stage"
    assert hub.main(["upload", str(gguf), "--repo-id", "someone/m-gguf", "--base-model",
                     "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "--dry-run", "--stage-dir", str(stage)]) == 0
    assert sorted(p.name for p in stage.iterdir()) == ["README.md", "model-q8_0.gguf"]
    card = ModelCard.load(stage / "README.md")
    assert "gguf" in card.data.tags and card.data.library_name is None
    assert card.data.license == "apache-2.0" and "ollama run hf.co/someone/m-gguf" in card.text

    stage = tmp_path / "merged-stage"
    assert hub.main(["upload", str(tinyllama), "--repo-id", "someone/merged", "--base-model",
                     "meta-llama/Llama-3.1-8B-Instruct", "--license", "other", "--dry-run",
                     "--stage-dir", str(stage)]) == 0
    card = ModelCard.load(stage / "README.md")
    assert card.data.library_name == "transformers" and card.data.license == "other"
    assert card.data.base_model == "meta-llama/Llama-3.1-8B-Instruct"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in stage.iterdir()}


def test_refusals(adapter, tmp_path, monkeypatch, capsys):
    stage = tmp_path / "stage"
    stage.mkdir()
    with pytest.raises(SystemExit) as exc:  # existing stage dir without --force
        hub.main(["upload", str(adapter), "--repo-id", "someone/x", "--dry-run", "--stage-dir", str(stage)])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:  # a token is never a command-line argument
        hub.main(["upload", str(adapter), "--repo-id", "someone/x", "--token", FAKE_TOKEN])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        hub.main(["upload", str(adapter), "--repo-id", "not a repo id", "--dry-run"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as exc:  # a real upload is not attempted offline
        hub.main(["upload", str(adapter), "--repo-id", "someone/x"])
    assert exc.value.code == 2 and "HF_HUB_OFFLINE" in capsys.readouterr().err


def test_help_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "deploy.hub", "upload", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--repo-id" in result.stdout and "--token" not in result.stdout
