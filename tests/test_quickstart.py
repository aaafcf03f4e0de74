"""The quickstart end to end: data tool, real Axolotl training, merge, eval, GGUF, llama.cpp, Ollama, vLLM.

Also the proof that a fine-tune on the QA sample improves held-out loss and keyword recall over the base.
"""
import json

import pytest

from deploy._modelfile import parse_modelfile
from scripts import quickstart

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart") / "qs"
    report, answer = quickstart.run(out)
    return out, report, answer


def test_fine_tune_improves_held_out_loss_and_keyword_recall(run):
    out, report, _ = run
    base, tuned = report["base"], report["tuned"]
    assert tuned["loss"] < base["loss"] - 0.5
    assert tuned["keyword_recall"] > base["keyword_recall"]
    assert tuned["rouge_l"] > base["rouge_l"]
    assert json.loads((out / "eval.json").read_text())["tuned"]["loss"] == tuned["loss"]


def test_every_artifact_is_written(run):
    out, _, answer = run
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert (out / "merged" / "model.safetensors").exists()
    assert (out / "curves" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert answer.strip()
    summary = (out / "summary.txt").read_text()
    assert "keyword recall" in summary and "quickstart-f16.gguf" in summary
    assert not list(out.rglob(".tmp-*"))


def test_modelfile_and_serve_commands(run):
    out, _, _ = run
    commands = dict(parse_modelfile((out / "Modelfile").read_text()))
    assert commands["model"] == "./gguf/quickstart-f16.gguf"
    assert "<|im_start|>" in commands["template"] and commands["system"].startswith("Answer the question")
    lora = (out / "serve-lora.sh").read_text()
    assert "--enable-lora" in lora and "--max-lora-rank 16" in lora and "127.0.0.1" in lora


def test_quickstart_refuses_to_overwrite_without_force(run):
    out, _, _ = run
    with pytest.raises(FileExistsError, match="--force"):
        quickstart.run(out)
