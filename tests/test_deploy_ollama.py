"""deploy.ollama: the Modelfile's TEMPLATE, parsed back as Ollama parses it and executed with Go
template semantics, renders conversations exactly as each model's own chat template does."""
import json
import os
import shutil
import subprocess
import sys

import pytest
from transformers import AutoTokenizer

from common import ROOT
from deploy import _gotemplate, _modelfile, ollama
from tests.tools import require

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
    assert ollama.render_modelfile(text, messages) == reference(tokenizer, messages)


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
    assert ollama.render_template(ollama.go_template("chatml"), messages) != reference(tokenizer, messages)
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
    rendered = ollama.render_modelfile(text, [{"role": "user", "content": "hi"}])
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


# --- the Go template interpreter and the Modelfile parser port ---

GO_SEMANTICS = [  # (template, data, what Go's text/template prints): checked against real Go below
    ("a  {{- .X -}}  b", {"X": "x"}, "axb"),
    ("{{ if .X }}yes{{ else if eq .Y \"2\" }}two{{ else }}no{{ end }}", {"X": "", "Y": "2"}, "two"),
    ("{{ range $i, $m := .L }}{{ $i }}{{ $m }}{{ else }}empty{{ end }}", {"L": ["a", "b"]}, "0a1b"),
    ("{{ range .L }}x{{ else }}empty{{ end }}", {"L": []}, "empty"),
    ("{{ $v := \"a\" }}{{ range .L }}{{ $v = . }}{{ end }}{{ $v }}", {"L": ["p", "q"]}, "q"),
    ("{{ and .A .B }}|{{ or .A .B }}|{{ not .A }}", {"A": "", "B": "b"}, "|b|true"),
    ("{{ len (slice .L 1) }} {{ eq (len .L) 3 }} {{ ne 1 2 }}", {"L": [1, 2, 3]}, "2 true true"),
    ("{{/* note */}}{{ \"a\\nb\" }}{{ `raw` }}", {}, "a\nbraw"),
]


@pytest.mark.parametrize("template, data, expected", GO_SEMANTICS)
def test_go_template_semantics(template, data, expected):
    assert _gotemplate.render(template, data) == expected


@pytest.mark.parametrize("template", ["{{ with .X }}{{ end }}", "{{ printf \"%s\" .X }}", "{{ if .X }}", "{{ end }}"])
def test_go_template_unsupported_or_broken_is_an_error(template):
    with pytest.raises(_gotemplate.TemplateError):
        _gotemplate.render(template, {"X": "x"})


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


def test_templates_match_real_go_text_template(tmp_path):
    """Our TEMPLATEs and the semantics cases above, run through Go's real text/template (Debian's
    golang-go, offline: no modules to download)."""
    go = require("go", "golang-go")
    (tmp_path / "go.mod").write_text("module gocheck\ngo 1.18\n")
    (tmp_path / "main.go").write_text(GO_PROGRAM)
    binary = tmp_path / "gocheck"
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOPROXY": "off", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0",
           "GOCACHE": str(tmp_path / "cache"), "GOPATH": str(tmp_path / "gopath"), "HOME": str(tmp_path)}
    build = subprocess.run([go, "build", "-o", str(binary), "."], cwd=tmp_path, capture_output=True, text=True,
                           env=env, timeout=300)
    assert build.returncode == 0, f"go build failed:\n{build.stderr[-2000:]}"
    cases = []
    templates = [ollama.go_template(f) for f in ollama.FAMILIES]
    templates.append(ollama.go_template("llama3", "Pre {{x}}\n\n", True))
    for template in templates:
        for conversation in CONVERSATIONS.values():
            msgs = [{"Role": m["role"], "Content": m["content"]} for m in conversation]
            cases.append({"template": template, "data": {"Messages": msgs, "System": ""}})
    result = subprocess.run([str(binary)], input=json.dumps(cases + [{"template": t, "data": d}
                                                                    for t, d, _ in GO_SEMANTICS]),
                            capture_output=True, text=True, check=True, timeout=60)
    outputs = json.loads(result.stdout)
    assert len(outputs) == len(cases) + len(GO_SEMANTICS)
    for case, got in zip(cases, outputs):
        assert got == {"out": _gotemplate.render(case["template"], case["data"])}
    assert outputs[len(cases):] == [{"out": expected} for _, _, expected in GO_SEMANTICS]


GO_PROGRAM = r'''package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"text/template"
)

func main() {
	var cases []struct {
		Template string         `json:"template"`
		Data     map[string]any `json:"data"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		panic(err)
	}
	var out []map[string]string
	for _, c := range cases {
		t, err := template.New("").Option("missingkey=zero").Parse(c.Template)
		if err != nil {
			out = append(out, map[string]string{"err": err.Error()})
			continue
		}
		var b bytes.Buffer
		if err := t.Execute(&b, c.Data); err != nil {
			out = append(out, map[string]string{"err": err.Error()})
			continue
		}
		out = append(out, map[string]string{"out": b.String()})
	}
	js, _ := json.Marshal(out)
	fmt.Println(string(js))
}
'''
