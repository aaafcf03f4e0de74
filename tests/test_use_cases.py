"""Every use case learns its task on the embedded SmolLM2-135M-Instruct, measured the way users call it:
one real vLLM server serves the base and the five adapters trained by this repo's recipes (qa from the
quickstart, rpg, persona, alpaca, character) at once, and each adapter beats the base on its own held-out
task there (alpaca through /v1/completions in its Alpaca prompt, the others through the chat endpoint).
"""
import pytest

from deploy import vllm
from deploy.vllm_server import Server, free_port, vllm_python
from eval._models import EndpointGenerator
from scripts.results import USE_CASES, compare, score
from tests.helpers import vllm_log_tracebacks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(smollm2, use_case_adapters, tmp_path_factory):
    assert vllm_python(), "vLLM is not installed: scripts/setup.sh installs it into .cache/vllm"
    port = free_port()
    specs = [f"{name}={path}" for name, path in use_case_adapters.items()]
    argv, _, _ = vllm.serve_argv(str(smollm2), specs, port=port, served_model_name="base",
                                 extra=["--max-model-len", "1024", "--enforce-eager"])
    log = tmp_path_factory.mktemp("vllm-use-cases") / "server.log"
    with Server(argv, log, port=port, timeout=240) as running:
        yield running
    assert not vllm_log_tracebacks(log.read_text())


@pytest.fixture(scope="module")
def base_scores(server):
    base = EndpointGenerator(server.base_url, "base")
    return {name: score(name, base) for name in USE_CASES}


@pytest.mark.parametrize("name", list(USE_CASES))
def test_adapter_beats_the_base_on_its_own_task_through_vllm(name, server, base_scores):
    tuned = score(name, EndpointGenerator(server.base_url, name))
    base = base_scores[name]
    row = compare(name, base, tuned)
    outputs = lambda result: [item["output"] for item in result["items"]]  # noqa: E731
    assert outputs(tuned) != outputs(base)
    assert row["pass"], row
    if name == "character":
        assert base["break_rate"] > 0 and tuned["in_character"] > base["in_character"], row
    else:
        assert row["tuned"] > row["base"], row


def test_every_adapter_keeps_the_base_perplexity_on_general_questions(smollm2, use_case_adapters):
    """Retention: on eval/data/general_heldout.jsonl (no recipe trains on it) each tuned model's perplexity
    of the reference answers is at most 10% above the base's (rpg and persona mix in scripts/samples/general.py's
    replay to hold it)."""
    from common.io import read_jsonl
    from eval._models import HFGenerator
    from eval.perplexity import heldout_loss
    from scripts.results import GENERAL

    records = [record for _, record in read_jsonl(GENERAL)]
    ppl = {}
    for name, adapter in use_case_adapters.items():
        generator = HFGenerator(smollm2, adapter)
        if "base" not in ppl:
            with generator.base():
                ppl["base"] = heldout_loss(generator.model, generator.tok, records)["ppl"]
        ppl[name] = heldout_loss(generator.model, generator.tok, records)["ppl"]
    worse = {name: round(p / ppl["base"] - 1, 3) for name, p in ppl.items() if p > 1.10 * ppl["base"]}
    assert not worse, (worse, ppl)


def test_served_base_model_is_fed_the_prefix_axolotl_trains(server, tmp_path):
    """Token parity on the server users call (tests/test_token_parity.py has the other paths and models):
    vLLM's chat prompt for the embedded model is exactly the prefix Axolotl trains before the last reply."""
    from tests.test_token_parity import (CONVERSATIONS, RECIPES, axolotl_tokenized, last_reply_start, prompts,
                                         vllm_prompt_ids)

    _, trained = axolotl_tokenized(RECIPES["smollm2"], tmp_path)
    for i, conversation in enumerate(CONVERSATIONS):
        want = trained[i]["input_ids"][:last_reply_start(trained[i])]
        assert vllm_prompt_ids(server.base_url, "base", prompts(conversation)) == want, f"conversation {i}"
