"""deploy.ollama: the Modelfile's TEMPLATE, parsed back as Ollama parses it and executed by Go's own
text/template as Ollama's server runs it (tests/ollama_go.py), renders conversations exactly as each
model's own chat template does; and the TEMPLATE's meaning in Python, which deploy.ollama checks against
the tokenizer without Go, is what Go renders."""
import itertools
import json
import shutil
import subprocess
import sys

import pytest
from transformers import AutoTokenizer

from common import ROOT
from common.models import EMBEDDED, LLAMA31, PHI35, QWEN25, TINYLLAMA, local_model
from deploy import _modelfile, ollama
from tests import ollama_go

BOS_TEXTS = ("<s>", "<|begin_of_text|>")  # what llama.cpp/Ollama prepend themselves


def reference(tokenizer, messages):
    """The tokenizer's own rendering: generation prompt after a user turn, an open final assistant turn
    otherwise; a leading BOS text stripped (Ollama adds BOS from the GGUF metadata)."""
    if messages[-1]["role"] == "assistant":
        text = tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    else:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    for bos in BOS_TEXTS:
        if text.startswith(bos):
            return text[len(bos):]
    return text


CONVERSATIONS = {
    "system+user": [{"role": "system", "content": "You are a terse pirate.\nAnswer in one line."},
                    {"role": "user", "content": "Where is the treasure?"}],
    "no system": [{"role": "user", "content": "Name three primes, café-style: 2, 3, 5?"}],
    "multi-turn": [{"role": "system", "content": "Be kind."},
                   {"role": "user", "content": "Hi!"},
                   {"role": "assistant", "content": "Hello, how can I help?"},
                   {"role": "user", "content": "Tell me a {{joke}} about \"quotes\"."}],
    "multi-turn no system": [{"role": "user", "content": "One"},
                             {"role": "assistant", "content": "Two"},
                             {"role": "user", "content": "Three"}],
    "assistant prefill": [{"role": "user", "content": "Start a list."},
                          {"role": "assistant", "content": "1."}],
}

EXPECTED = {  # model fixture -> (family, stop strings that must be there, default SYSTEM)
    "smollm2": ("chatml", ["<|im_end|>", "<|im_start|>"], "You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
    "tinyllama": ("zephyr", ["</s>", "<|user|>"], None),
    "llama31": ("llama3", ["<|eot_id|>", "<|start_header_id|>"], None),
}


@pytest.fixture(scope="module")
def fake_gguf(tmp_path_factory):
    # the Modelfile only names the GGUF; its content is not read here
    path = tmp_path_factory.mktemp("gguf") / "model.gguf"
    path.write_bytes(b"GGUF")
    return path


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def written(request, tmp_path_factory, fake_gguf):
    model_dir = request.getfixturevalue(request.param)
    out = tmp_path_factory.mktemp("mf") / "Modelfile"
    assert ollama.main(["--gguf", str(fake_gguf), "--model", str(model_dir), "-o", str(out)]) == 0
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return request.param, out.read_text(encoding="utf-8"), tokenizer


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
def test_modelfile_template_matches_tokenizer(written, conversation):
    name, text, tokenizer = written
    messages = CONVERSATIONS[conversation]
    assert ollama_go.render_modelfile(text, messages) == reference(tokenizer, messages)


def test_modelfile_directives(written, fake_gguf):
    name, text, _ = written
    family, stops, default_system = EXPECTED[name]
    commands = _modelfile.parse_modelfile(text)
    names = [n for n, _ in commands]
    assert names.count("model") == 1 and names.count("template") == 1
    assert dict(commands)["model"] == str(fake_gguf.resolve())  # not below the Modelfile's folder: absolute
    assert [v for n, v in commands if n == "template"][0] == ollama.go_template(family, *(
        ("Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n", True) if name == "llama31" else ()))
    got_stops = [v for n, v in commands if n == "stop"]
    assert set(stops) <= set(got_stops)
    assert dict(commands).get("system") == default_system
    assert "<s>" not in text and "<|begin_of_text|>" not in text  # BOS is Ollama's job


def test_wrong_family_template_is_caught(tinyllama):
    """The comparison can fail: ChatML's template does not render TinyLlama's conversations."""
    tokenizer = AutoTokenizer.from_pretrained(str(tinyllama))
    messages = CONVERSATIONS["multi-turn"]
    chatml = ollama.ChatTemplate(ollama.FAMILY_NAMES["chatml"])
    assert chatml.render(messages) != reference(tokenizer, messages)
    with pytest.raises(ollama.InputError, match="not recognised"):
        ollama.detect(tokenizer, families=[ollama.FAMILY_NAMES["chatml"], ollama.FAMILY_NAMES["llama3"]])


def test_unknown_template_is_an_error(tmp_path, tinyllama, fake_gguf, capsys):
    model = tmp_path / "alpaca-style"
    shutil.copytree(tinyllama, model, ignore=shutil.ignore_patterns("*.safetensors"))
    (model / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if m['role'] == 'user' %}### Instruction:\n{{ m['content'] }}\n\n"
        "{% else %}### Response:\n{{ m['content'] }}\n\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}### Response:\n{% endif %}")
    out = tmp_path / "Modelfile"
    with pytest.raises(SystemExit) as exc:
        ollama.main(["--gguf", str(fake_gguf), "--model", str(model), "-o", str(out)])
    assert exc.value.code == 2
    assert "chat template not recognised" in capsys.readouterr().err
    assert not out.exists()


def test_recipe_settings_params_and_precedence(tmp_path, smollm2, fake_gguf):
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    (recipe / "deploy.json").write_text(json.dumps(
        {"system": "From deploy.json", "temperature": 0.7, "top_p": 0.9, "stop": ["USER:", "ASSISTANT:"]}))
    out = tmp_path / "Modelfile"
    ollama.main(["--gguf", str(fake_gguf), "--model", str(smollm2), "--recipe-dir", str(recipe),
                 "--param", "temperature=0.2", "--param", "num_ctx=4096", "--param", "stop=###", "-o", str(out)])
    commands = _modelfile.parse_modelfile(out.read_text())
    params = {}
    for n, v in commands:
        params.setdefault(n, []).append(v)
    assert params["system"] == ["From deploy.json"]
    assert params["temperature"] == ["0.2"] and params["top_p"] == ["0.9"] and params["num_ctx"] == ["4096"]
    assert params["stop"] == ["<|im_start|>", "<|im_end|>", "USER:", "ASSISTANT:", "###"]
    # --system wins over deploy.json, and a system message in the request wins over SYSTEM
    out2 = tmp_path / "Modelfile2"
    ollama.main(["--gguf", str(fake_gguf), "--model", str(smollm2), "--recipe-dir", str(recipe),
                 "--system", "From the CLI", "-o", str(out2)])
    text = out2.read_text()
    assert dict(_modelfile.parse_modelfile(text))["system"] == "From the CLI"
    rendered = ollama_go.render_modelfile(text, [{"role": "user", "content": "hi"}])
    assert rendered.startswith("<|im_start|>system\nFrom the CLI<|im_end|>\n<|im_start|>user\nhi")


@pytest.mark.parametrize("param, message", [
    ("bogus=1", "unknown Ollama parameter"),
    ("num_ctx=4k", "is not an integer"),
    ("temperature=hot", "is not a number"),
    ("noequals", "expected key=value"),
])
def test_bad_params_are_refused(tmp_path, smollm2, fake_gguf, capsys, param, message):
    out = tmp_path / "Modelfile"
    with pytest.raises(SystemExit) as exc:
        ollama.main(["--gguf", str(fake_gguf), "--model", str(smollm2), "--param", param, "-o", str(out)])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("system", [
    'Be nice."""\nFROM /evil.gguf\nSYSTEM """pwned',
    'trailing triple quote"""',
    "zero\u200bwidth",  # dropped silently by Ollama's parser
])
def test_injection_or_lossy_values_are_refused(tmp_path, smollm2, fake_gguf, capsys, system):
    out = tmp_path / "Modelfile"
    with pytest.raises(SystemExit):
        ollama.main(["--gguf", str(fake_gguf), "--model", str(smollm2), "--system", system, "-o", str(out)])
    assert "error:" in capsys.readouterr().err
    assert not out.exists()


def test_tricky_values_round_trip(tmp_path, smollm2, fake_gguf):
    """Newlines followed by directives, quotes, '#' lines stay inside their value."""
    system = 'Line one\nFROM /evil.gguf\nPARAMETER temperature 9\n# not a comment\n  "quoted" \\ backslash\t'
    recipe = tmp_path / "r"
    recipe.mkdir()
    (recipe / "deploy.json").write_text(json.dumps({"stop": ['say "stop"', "multi\nline", " spaced "]}))
    out = tmp_path / "Modelfile"
    ollama.main(["--gguf", str(fake_gguf), "--model", str(smollm2), "--system", system,
                 "--recipe-dir", str(recipe), "-o", str(out)])
    commands = _modelfile.parse_modelfile(out.read_text())
    assert [v for n, v in commands if n == "model"] == [str(fake_gguf.resolve())]
    assert dict(commands)["system"] == system
    assert "temperature" not in dict(commands)
    assert [v for n, v in commands if n == "stop"][-3:] == ['say "stop"', "multi\nline", " spaced "]


def test_adapter_paths_and_overwrite(tmp_path, tinyllama):
    base = tmp_path / "base.gguf"
    adapter = tmp_path / "lora dir" / "adapter.gguf"
    adapter.parent.mkdir()
    base.write_bytes(b"GGUF")
    adapter.write_bytes(b"GGUF")
    out = tmp_path / "Modelfile"
    args = ["--base", str(base), "--adapter", str(adapter), "--model", str(tinyllama), "-o", str(out)]
    assert ollama.main(args) == 0
    commands = _modelfile.parse_modelfile(out.read_text())
    assert dict(commands)["model"] == "./base.gguf"
    assert dict(commands)["adapter"] == "./lora dir/adapter.gguf"
    before = out.read_text()
    with pytest.raises(SystemExit) as exc:
        ollama.main(args)
    assert exc.value.code == 2 and out.read_text() == before
    assert ollama.main(args + ["--force", "--system", "new"]) == 0
    assert dict(_modelfile.parse_modelfile(out.read_text()))["system"] == "new"


def test_create_without_ollama_prints_the_command(tmp_path, monkeypatch, capsys, tinyllama, fake_gguf):
    monkeypatch.setenv("PATH", str(tmp_path))  # no ollama binary there
    out = tmp_path / "Modelfile"
    assert ollama.main(["--gguf", str(fake_gguf), "--model", str(tinyllama), "-o", str(out),
                        "--create", "my-model"]) == 0
    err = capsys.readouterr().err
    assert "ollama is not installed" in err and f"ollama create my-model -f {out}" in err


def test_help_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "deploy.ollama", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Modelfile" in result.stdout


# --- the TEMPLATE's meaning in Python against Go's text/template, and the Modelfile parser port ---

ASCII = "".join(chr(c) for c in range(1, 128))
PREAMBLES = [  # text a tokenizer's system block may start with; it goes into the TEMPLATE verbatim or quoted
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n",
    "Pre {{x}}\n\n", "}} and {{- .Content -}} {{/* c */}}", '  spaced "quoted" \\ back\\slash\t',
    "café 🦜 \u2028 \ufeff ünï", ASCII, "{{" + ASCII,
]
CHAT_CASES = [  # (request messages, Modelfile SYSTEM, Modelfile MESSAGEs): Ollama's request handling too
    *[(m, None, ()) for m in CONVERSATIONS.values()],
    (CONVERSATIONS["no system"], "Default {{system}}", ()),
    (CONVERSATIONS["multi-turn"], "Default, unused: the request has a system message", ()),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"},
      {"role": "assistant", "content": " d "}], None, ()),
    ([{"role": "system", "content": "s1"}, {"role": "system", "content": "s2"}, {"role": "user", "content": "u"}],
     None, ()),
    (CONVERSATIONS["multi-turn no system"], "Sys", ({"role": "user", "content": "preset q"},
                                                     {"role": "assistant", "content": "preset a"})),
    ([{"role": "user", "content": "after a preset user turn"}], None, ({"role": "user", "content": "preset"},)),
    ([{"role": "user", "content": ""}], None, ()),
]


def shipped_templates():
    """Every TEMPLATE deploy.ollama writes from the repo's models (their tokenizers' own templates) and
    each family with each preamble above, with and without the system block for conversations without one."""
    templates = {}
    for name in (EMBEDDED, TINYLLAMA, LLAMA31, QWEN25, PHI35):
        folder = local_model(name)
        if not (folder / "tokenizer_config.json").exists():
            pytest.fail(f"{folder} is missing: run `bash scripts/setup.sh` (it builds the local models)")
        detected = ollama.detect(AutoTokenizer.from_pretrained(str(folder)))
        templates[f"{name} (derived)"] = (detected.chat, detected.default_system)
    for family, preamble, always in itertools.product(ollama.FAMILIES, [""] + PREAMBLES, (False, True)):
        templates[f"{family.name} {preamble[:12]!r} {always}"] = (ollama.ChatTemplate(family, preamble, always), None)
    return templates


def test_template_meaning_is_what_go_renders():
    """What detect() compares with the tokenizer (ChatTemplate.render, Python) is what Go's text/template,
    run as Ollama runs it, renders from the TEMPLATE text: for every derived template, family and preamble."""
    ollama_go.binary()  # skips or fails first where Go is missing
    cases, expected = [], []
    for label, (chat, default) in shipped_templates().items():
        for messages, system, preset in CHAT_CASES:
            system = default if system is None else system
            cases.append((chat.text, ollama.chat_messages(messages, system, preset)))
            expected.append((label, messages, chat.render(messages, system, preset)))
    outputs = ollama_go.execute(cases)
    mismatches = [(label, messages, got, want) for (label, messages, want), got in zip(expected, outputs)
                  if got != {"out": want}]
    assert not mismatches, f"{len(mismatches)} of {len(cases)} differ, first: {mismatches[0]}"


def test_modelfile_parser_matches_ollama_rules():
    text = ('# comment\nFROM ./m.gguf\nSYSTEM """a\nFROM /x\n"""\nPARAMETER stop "<|im_end|>"\n'
            'PARAMETER stop """a"b"""\nTEMPLATE {{ .Prompt }}\nMESSAGE user hello there\n')
    assert _modelfile.parse_modelfile(text) == [
        ("model", "./m.gguf"), ("system", "a\nFROM /x\n"), ("stop", "<|im_end|>"), ("stop", 'a"b'),
        ("template", "{{ .Prompt }}"), ("message", "user: hello there")]
    # a triple quote ending a line closes the value: what follows becomes a directive
    injected = 'FROM ./m.gguf\nSYSTEM """x"""\nFROM /evil.gguf\n"""\n'
    with pytest.raises(_modelfile.ModelfileError):
        _modelfile.parse_modelfile(injected)
    assert _modelfile.parse_modelfile('FROM a\nSYSTEM """x"""\nFROM /evil.gguf\n') == [
        ("model", "a"), ("system", "x"), ("model", "/evil.gguf")]
