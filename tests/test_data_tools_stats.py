"""data_tools.stats: token lengths with the recipe's real tokenizer and chat template, JSON and PNG outputs."""
import json

import pytest

from common import ROOT
from common.errors import InputError
from data_tools import qa, stats

FIXTURES = ROOT / "tests" / "fixtures" / "data_tools"
LENGTHS = FIXTURES / "stats_lengths.jsonl"  # lines 3, 5 and 7 hold ~250-token texts, the rest a few words


def test_over_length_count_png_and_json(smollm2, tmp_path, capsys):
    out_json, out_png = tmp_path / "s.json", tmp_path / "s.png"
    stats.main([str(LENGTHS), "--tokenizer", str(smollm2), "--sequence-len", "64", "--json", str(out_json),
                "--png", str(out_png)])
    summary = json.loads(out_json.read_text())
    assert summary["count"] == 7 and summary["sequence_len"] == 64
    assert summary["over_sequence_len"] == 3 and summary["over_sequence_len_lines"] == [3, 5, 7]
    assert summary["roles"] == {"user": 8, "assistant": 8}  # the data's own turns, not the template's
    tokens = summary["tokens"]
    assert tokens["min"] < 64 < tokens["max"] and tokens["min"] <= tokens["p50"] <= tokens["p95"] <= tokens["max"]
    # three capped records fill three bins; SmolLM2's template adds its default system prompt, so every
    # short record is over 32 tokens and no two of them share a 64-token bin
    assert tokens["min"] > 32 and summary["packing"]["bins"] == 7 and 0.5 < summary["packing"]["efficiency"] < 1
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out_png.stat().st_size > 5000
    printed = capsys.readouterr().out
    assert "7 records" in printed and "over sequence_len 64: 3" in printed


def test_recipe_gives_tokenizer_template_and_sequence_len(smollm2, tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    qa.convert_file(ROOT / "recipes/tinyllama-qa/data/qa_train.jsonl", data)
    recipe = ROOT / "recipes/quickstart/lora-135m.yml"
    stats.main([str(data), "--recipe", str(recipe), "--json", str(tmp_path / "s.json")])
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["count"] == 176 and summary["sequence_len"] == 256 and summary["over_sequence_len"] == 0
    assert summary["roles"] == {"system": 176, "user": 176, "assistant": 176}
    assert summary["chat_template"] == "tokenizer_default" and summary["tokenizer"].endswith("smollm2-135m-instruct")


def test_hub_id_maps_to_stand_in_and_named_template(tinyllama, llama31, tmp_path):
    recipe = tmp_path / "r.yml"
    recipe.write_text("base_model: meta-llama/Llama-3.1-8B-Instruct\nchat_template: llama3\nsequence_len: 64\n"
                      "datasets:\n  - path: x.jsonl\n    type: chat_template\n")
    stats.main([str(LENGTHS), "--recipe", str(recipe), "--json", str(tmp_path / "l.json")])
    llama = json.loads((tmp_path / "l.json").read_text())
    assert llama["tokenizer"] == str(llama31) and llama["over_sequence_len"] == 3
    stats.main([str(LENGTHS), "--tokenizer", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "--sequence-len", "64",
                "--json", str(tmp_path / "t.json")])
    tiny = json.loads((tmp_path / "t.json").read_text())
    assert tiny["tokenizer"] == str(tinyllama) and tiny["tokens"] != llama["tokens"]


def test_pack_first_fit_decreasing():
    assert stats.pack([10, 60, 30, 50, 20, 40], 100) == 3
    assert stats.pack([150, 20], 100) == 2  # an over-long record fills a bin of its own
    summary = stats.summarize([100, 100, 50], [1, 2, 3], {}, 100)
    assert summary["packing"] == {"bins": 3, "efficiency": round(250 / 300, 4)}
    assert summary["tokens"]["p50"] == 100 and summary["tokens"]["p95"] == 100 and summary["over_sequence_len"] == 0


def test_refuses_existing_outputs_before_any_work(tmp_path, capsys):
    (tmp_path / "s.png").write_bytes(b"old")
    with pytest.raises(SystemExit) as exit_info:
        stats.main([str(LENGTHS), "--tokenizer", "/nonexistent", "--sequence-len", "8",
                    "--png", str(tmp_path / "s.png")])
    assert exit_info.value.code == 2 and "--force" in capsys.readouterr().err
    assert (tmp_path / "s.png").read_bytes() == b"old"


def test_recipe_errors_name_the_field(tmp_path):
    recipe = tmp_path / "r.yml"
    recipe.write_text("base_model: some-org/unknown-model\nsequence_len: 128\n")
    with pytest.raises(InputError) as info:
        stats.resolve_model(stats.read_recipe(recipe)[0], recipe)
    assert info.value.field == "base_model" and "no built stand-in" in info.value.message
    recipe.write_text("base_model: x\n")
    with pytest.raises(InputError) as info:
        stats.read_recipe(recipe)
    assert (info.value.file, info.value.field) == (recipe, "sequence_len")
    recipe.write_text("base_model: [x\n")
    with pytest.raises(InputError, match="invalid YAML"):
        stats.read_recipe(recipe)


def test_invalid_record_names_line(smollm2, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(LENGTHS.read_text().splitlines()[0] + '\n{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(SystemExit):
        stats.main([str(data), "--tokenizer", str(smollm2), "--sequence-len", "64"])
    err = capsys.readouterr().err
    assert f"error: {data}:2: field 'messages[0]': conversation must end with an assistant turn" in err
    stats.main([str(data), "--tokenizer", str(smollm2), "--sequence-len", "64", "--skip-invalid"])
    captured = capsys.readouterr()
    assert "1 records" in captured.out and "dropped 1: does not end with assistant" in captured.err
