"""scripts.bench.packing and scripts.bench.merge_export at a tiny size: real runs of both contenders,
figures that must agree between them (no timing assertions)."""
import json
import subprocess
import sys

import pytest

from common import ROOT
from common.io import read_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.bench]  # make test ARGS="-m bench"


def bench(module, *args):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)


def test_packing_bench_trains_both_ways_on_the_same_tokens(tmp_path):
    out = tmp_path / "packing.json"
    out.write_text("{}")
    args = ["--data", "qa", "--limit", "5", "--repeat", "2", "--work", tmp_path / "work", "--json", out]
    refused = bench("scripts.bench.packing", *args)
    assert refused.returncode == 2 and "--force" in refused.stderr and out.read_text() == "{}"

    run = bench("scripts.bench.packing", *args, "--force")
    assert run.returncode == 0, run.stderr[-3000:]
    qa = json.loads(out.read_text())["results"]["qa"]
    # the repeated set: the first 5 sample conversations, twice over
    data = tmp_path / "work" / "tinyllama-qa-5x2.jsonl"
    records = [r for _, r in read_jsonl(data)]
    assert len(records) == 10 and records[:5] == records[5:]
    assert (qa["conversations"], qa["repeat"]) == (10, 2)
    packed, padded = qa["packed"], qa["padded"]
    assert packed["real_tokens"] == padded["real_tokens"] > 0  # both trained on the same chat-template tokens
    assert padded["steps"] == 10 and padded["computed_tokens"] == 10 * 512
    assert packed["fewest_possible_steps"] <= packed["steps"] < padded["steps"]
    assert packed["computed_tokens"] == packed["steps"] * 512
    assert 0 < padded["packing_efficiency"] < packed["packing_efficiency"] <= 1
    assert qa["real_tokens_per_s_ratio"] > 0 and isinstance(qa["targets_met"], bool)
    assert qa["ratio_ceiling"] == round(10 * 512 / padded["real_tokens"], 2)
    # Axolotl's packer on the 5 conversations' lengths repeated 1, 5, 20 and 100 times
    scale = qa["axolotl_packer_at_scale"]
    assert [row["conversations"] for row in scale] == [5, 25, 100, 500]
    for row in scale:
        fewest, most = map(int, row["axolotl_sequences"].split("-"))
        assert row["fewest_possible"] <= fewest <= most
    assert scale[1]["fewest_possible"] == -(-packed["real_tokens"] * 5 // 2 // 512)  # x5 of the 5 conversations
    assert "qa (5 conversations x 2)" in run.stdout and "targets (>=95%, >=3x) met" in run.stdout
    assert "Axolotl's packer alone" in run.stdout


def test_merge_export_bench_matches_peft_and_llama_cpp(tmp_path):
    out = tmp_path / "merge_export.json"
    run = bench("scripts.bench.merge_export", "--layers", 1, "--shard-size", "100MB", "--work", tmp_path,
                "--json", out)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    merge, export = result["merge"], result["gguf_f16"]
    assert merge["max_abs_weight_diff"] == 0.0  # our streaming merge writes PEFT's exact weights
    assert export["identical"] is True and export["tensors"] == 3 + 9  # embeddings, norm, head + one layer
    for timing in (merge["ours"], merge["peft_merge_and_unload"], export["ours"], export["convert_hf_to_gguf"]):
        assert timing["rc"] == 0 and timing["seconds"] > 0 and timing["peak_rss_mb"] > 0
    assert len(list(tmp_path.glob("tinyllama-1.1b-random-1l-100MB/model-*.safetensors"))) > 1  # sharded
    assert "merge: time ours/PEFT" in run.stdout and "GGUF: time ours/llama.cpp" in run.stdout
