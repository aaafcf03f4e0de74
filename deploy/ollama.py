"""Write an Ollama Modelfile for a GGUF model (or GGUF base + LoRA adapter) with the right chat template.

The chat template family is found by rendering probe conversations with the HF tokenizer's own
template (tokenizer.apply_chat_template) and comparing them with what Ollama would build from
each known family's Go TEMPLATE: ChatML (SmolLM2, Qwen), Zephyr (TinyLlama-Chat), Phi-3, Llama 3
(3.0 and 3.1, including 3.1's fixed "Cutting Knowledge Date" system preamble) and Gemma 4 (its
assistant turns are "model" turns). The comparison uses
the TEMPLATE's meaning written in Python (ChatTemplate.render: no Go needed here); the tests execute
the TEMPLATE text itself with Go's text/template and check it renders the same. A family is only
accepted when every probe renders identically; otherwise the tool stops with an error instead
of guessing. A template's default system prompt (SmolLM2's) becomes the Modelfile's SYSTEM.

Semantics that the TEMPLATE follows (Ollama's own conventions):
  - a conversation ending with a user message gets the assistant generation prompt
    (= apply_chat_template(add_generation_prompt=True));
  - one ending with an assistant message leaves it open, so Ollama continues it
    (= apply_chat_template(continue_final_message=True)).
  - no BOS text: Ollama/llama.cpp add BOS from the GGUF metadata (tokenizer.ggml.add_bos_token),
    so the comparison strips a leading bos_token when the HF template writes one.
  - Go templates have no trim: Llama 3 templates strip whitespace around message content and
    Ollama will not; such content renders differently (reported as a note).

Values are written so that Ollama's Modelfile parser reads back exactly what was meant: text
containing a triple quote or characters that the parser silently drops is refused, and every
Modelfile written is parsed back (with a port of Ollama's parser) and compared before it is saved.

deploy.json in --recipe-dir (optional): {"system": "...", "stop": ["..."], "temperature": 0.7,
"top_p": 0.9, ...any Ollama PARAMETER}. --system and --param override it.

Examples:
  python -m deploy.ollama --gguf out/model-q4_k_m.gguf --model .cache/models/smollm2-135m-instruct -o Modelfile
  python -m deploy.ollama --base base.gguf --adapter lora.gguf --model BASE_DIR --recipe-dir recipes/x \\
      --param num_ctx=4096 -o Modelfile --create my-model
"""
import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from common import offline_defaults
from common.errors import InputError, cli
from common.io import atomic_open, check_output, read_json
from deploy._modelfile import (LIST_PARAMS, check_text, parse_modelfile, parse_param, path_value,
                              quote, unquote)

# --- what Ollama does with a chat request ---

def chat_messages(messages, system=None, preset=()):
    """The messages Ollama's /api/chat hands to the TEMPLATE (server/routes.go): the Modelfile's MESSAGE
    history, then the request's, with the Modelfile's SYSTEM first when the request has no system message."""
    msgs = [dict(m) for m in preset] + [dict(m) for m in messages]
    if messages and messages[0]["role"] != "system" and system:
        msgs = [{"role": "system", "content": system}] + msgs
    return msgs


def collate(messages):
    """Ollama's template.collate: consecutive messages of one role (but tool) merged with a blank line."""
    out = []
    for m in messages:
        if out and out[-1]["role"] == m["role"] and m["role"] != "tool":
            out[-1] = {**out[-1], "content": out[-1]["content"] + "\n\n" + m["content"]}
        else:
            out.append(dict(m))
    return out


def modelfile_chat(modelfile_text, messages):
    """(TEMPLATE text, the messages Ollama hands to it) for a chat request to a model made from the Modelfile."""
    commands = parse_modelfile(modelfile_text)
    template = system = None
    preset = []
    for name, args in commands:
        if name == "template":
            template = args
        elif name == "system":
            system = args
        elif name == "message":
            role, _, content = args.partition(": ")
            preset.append({"role": role, "content": content})
    if template is None:
        raise ValueError("the Modelfile has no TEMPLATE")
    return template, chat_messages(messages, system=system, preset=preset)


# --- chat template families ---

@dataclass(frozen=True)
class Family:
    name: str
    label: str
    header: str          # text before a message's content, with {role}
    end: str             # text after a finished message
    stops: tuple
    roles: tuple = ()    # (role, the name the template writes for it) pairs: Gemma's "model" for assistant

    def role_name(self, role):
        return dict(self.roles).get(role, role)

    def head(self, role):
        return self.header.replace("{role}", self.role_name(role))

    @property
    def go_role(self):
        """The TEMPLATE's text for a message's role."""
        if not self.roles:
            return "{{ .Role }}"
        branches = "".join(f'{"if" if i == 0 else " else if"} eq .Role {json.dumps(role)} }}}}{_literal(name)}{{{{'
                           for i, (role, name) in enumerate(self.roles))
        return "{{ " + branches + " else }}{{ .Role }}{{ end }}"


FAMILIES = (
    Family("chatml", "ChatML", "<|im_start|>{role}\n", "<|im_end|>\n", ("<|im_start|>", "<|im_end|>")),
    Family("zephyr", "Zephyr", "<|{role}|>\n", "</s>\n", ("</s>", "<|user|>", "<|assistant|>", "<|system|>")),
    Family("llama3", "Llama 3", "<|start_header_id|>{role}<|end_header_id|>\n\n", "<|eot_id|>",
           ("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>")),
    Family("phi3", "Phi-3", "<|{role}|>\n", "<|end|>\n", ("<|end|>", "<|user|>", "<|assistant|>", "<|system|>",
                                                         "<|endoftext|>")),
    # Gemma 4 (E2B/E4B: no empty thought block after the generation prompt when thinking is off; Ollama's
    # own Gemma4Renderer, model/renderers/gemma4.go, renders these turns the same way for text chats)
    Family("gemma4", "Gemma 4", "<|turn>{role}\n", "<turn|>\n", ("<turn|>", "<|turn>"),
           roles=(("assistant", "model"),)),
)
FAMILY_NAMES = {f.name: f for f in FAMILIES}


def _literal(text):
    """Template text for a constant: raw when it cannot be read as an action, else a Go string."""
    if "{{" in text or "}}" in text:
        return "{{ " + json.dumps(text, ensure_ascii=False) + " }}"
    return text


@dataclass(frozen=True)
class ChatTemplate:
    """A family's TEMPLATE. preamble: text every system message starts with (Llama 3.1's knowledge-cutoff
    lines); always_system: a system block (preamble only) when the conversation has no system message.

    `text` is the Go template written into the Modelfile; `render` is what it means, in Python, which is
    what detect() compares with the tokenizer on the user's machine (no Go there). That the two agree is
    checked by the tests, which execute `text` with Go's real text/template (tests/ollama_go.py) for every
    family, derived preambles and hostile preamble text."""
    family: Family
    preamble: str = ""
    always_system: bool = False

    @property
    def text(self):
        family, preamble = self.family, self.preamble
        before, _, after = family.header.partition("{role}")
        role_head = _literal(before) + family.go_role + _literal(after)
        lines = ["{{- range $i, $_ := .Messages }}",
                 "{{- $last := eq (len (slice $.Messages $i)) 1 }}"]
        if self.always_system:
            lines.append('{{- if and (eq $i 0) (ne .Role "system") }}'
                         + _literal(family.head("system") + preamble + family.end) + "{{ end }}")
        system_prefix = ('{{ if eq .Role "system" }}' + _literal(preamble) + "{{ end }}") if preamble else ""
        lines[-1] += role_head + system_prefix + "{{ .Content }}"
        lines.append('{{- if or (not $last) (ne .Role "assistant") }}' + _literal(family.end) + "{{ end }}")
        lines.append('{{- if and $last (ne .Role "assistant") }}' + _literal(family.head("assistant"))
                     + "{{ end }}")
        lines.append("{{- end }}")
        return "\n".join(lines)

    def render(self, messages, system=None, preset=()):
        """The prompt Ollama's /api/chat builds with this TEMPLATE, `system` being the Modelfile's SYSTEM and
        `preset` its MESSAGE history: a conversation ending with a user message gets the generation prompt,
        one ending with an assistant message is left open for Ollama to continue."""
        if not messages:
            raise ValueError("no messages")
        family, out = self.family, []
        collated = collate(chat_messages(messages, system, preset))
        for i, m in enumerate(collated):
            last = i == len(collated) - 1
            if i == 0 and self.always_system and m["role"] != "system":
                out.append(family.head("system") + self.preamble + family.end)
            out.append(family.head(m["role"]) + (self.preamble if m["role"] == "system" else "") + m["content"])
            if not last or m["role"] != "assistant":
                out.append(family.end)
            if last and m["role"] != "assistant":
                out.append(family.head("assistant"))
        return "".join(out)


def go_template(family, preamble="", always_system=False):
    """The Ollama TEMPLATE text for a family (a name or a Family); see ChatTemplate."""
    if isinstance(family, str):
        family = FAMILY_NAMES[family]
    return ChatTemplate(family, preamble, always_system).text


PROBE_SYSTEM = "You are probe-system-7."
PROBE = {"s": ("system", PROBE_SYSTEM), "u1": ("user", "Probe question one?"),
         "a1": ("assistant", "Probe answer one."), "u2": ("user", "Probe question two?"),
         "a2": ("assistant", "Probe answer two.")}
PROBES = (("u1",), ("s", "u1"), ("s", "u1", "a1", "u2"), ("u1", "a1", "u2"),
          ("s", "u1", "a1"), ("u1", "a1", "u2", "a2"))


def probe_messages(keys):
    return [{"role": PROBE[k][0], "content": PROBE[k][1]} for k in keys]


def hf_render(tokenizer, messages):
    """What the HF tokenizer's template renders, in Ollama's terms (see the module docstring)."""
    if messages[-1]["role"] == "assistant":
        text = tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    else:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token
    if bos and "bos_token" in (tokenizer.chat_template or "") and text.startswith(bos):
        text = text[len(bos):]
    return text


@dataclass
class Detected:
    chat: ChatTemplate
    default_system: str | None
    probes: int
    notes: list = field(default_factory=list)

    @property
    def family(self):
        return self.chat.family

    @property
    def template(self):
        return self.chat.text


def _content_of_system_block(family, rendered):
    head = family.head("system")
    if not rendered.startswith(head):
        return None
    rest = rendered[len(head):]
    end = rest.find(family.end)
    return rest[:end] if end >= 0 else None


def _candidate(family, tokenizer):
    """(ChatTemplate, default system) for a family, derived from the no-system and system probes."""
    no_sys = hf_render(tokenizer, probe_messages(("u1",)))
    with_sys = hf_render(tokenizer, probe_messages(("s", "u1")))
    content = _content_of_system_block(family, with_sys)
    preamble, always, default = "", False, None
    if content is not None and content.endswith(PROBE_SYSTEM):
        preamble = content[: -len(PROBE_SYSTEM)]
    implicit = _content_of_system_block(family, no_sys)
    if implicit is not None:
        if implicit == preamble:
            always = True
        elif preamble == "":
            default = implicit
        else:
            return None
    return ChatTemplate(family, preamble, always), default


def detect(tokenizer, families=FAMILIES):
    """The family whose TEMPLATE renders every probe exactly as the tokenizer does, or InputError."""
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("the tokenizer has no chat template", field="chat_template")
    expected = [(keys, hf_render(tokenizer, probe_messages(keys))) for keys in PROBES]
    for family in families:
        candidate = _candidate(family, tokenizer)
        if candidate is None:
            continue
        chat, default = candidate
        if any(chat.render(probe_messages(keys), system=default) != want for keys, want in expected):
            continue
        notes = []
        padded = [{"role": "user", "content": "  probe padded  "}]
        want = hf_render(tokenizer, padded)
        if chat.render(padded, system=default) != want:
            trimmed = [{"role": "user", "content": "probe padded"}]
            if chat.render(trimmed, system=default) == want:
                notes.append("the tokenizer's template strips whitespace around message content; Go templates "
                             "cannot, so Ollama keeps it (content with leading/trailing spaces renders differently)")
            else:
                notes.append("content with leading/trailing whitespace renders differently from the tokenizer")
        return Detected(chat, default, len(expected), notes)
    sample = expected[2][1]
    raise InputError(
        "chat template not recognised: it renders probe conversations unlike every known family "
        f"({', '.join(f.label for f in families)}); refusing to guess. Rendered system+user+assistant+user "
        f"probe: {sample[:300]!r}", field="chat_template")


def load_tokenizer(model_dir):
    offline_defaults()
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: no such model directory")
    if not ((model_dir / "tokenizer_config.json").exists() or (model_dir / "chat_template.jinja").exists()):
        raise InputError("no tokenizer_config.json or chat_template.jinja", model_dir)
    return AutoTokenizer.from_pretrained(str(model_dir))


def read_deploy_json(recipe_dir):
    """({settings}, path) of recipe_dir/deploy.json, or of recipe_dir itself when it is a file."""
    path = Path(recipe_dir) if Path(recipe_dir).is_file() else Path(recipe_dir) / "deploy.json"
    if not path.exists():
        return {}, None
    return read_json(path), path


# --- the Modelfile ---

def modelfile_path_value(target, modelfile, what):
    """Path as written in FROM/ADAPTER: relative to the Modelfile when below its folder, else absolute."""
    target = Path(target).resolve()
    base = Path(modelfile).resolve().parent
    try:
        rel = target.relative_to(base)
        text = "./" + rel.as_posix()
    except ValueError:
        text = str(target)
    return path_value(text, what)


def build_commands(source, adapter, template, system, params):
    """Commands as (directive, raw value) pairs in the order written."""
    commands = [("FROM", source)]
    if adapter:
        commands.append(("ADAPTER", adapter))
    commands.append(("TEMPLATE", template))
    if system:
        commands.append(("SYSTEM", system))
    for key, values in params.items():
        for v in values:
            commands.append((f"PARAMETER {key}", v))
    return commands


def serialize(commands, header=()):
    lines = [f"# {h}" for h in header]
    expected = []
    for directive, value in commands:
        if directive in ("FROM", "ADAPTER"):
            lines.append(f"{directive} {value}")
            expected.append(("model" if directive == "FROM" else "adapter", unquote(value)[0]))
        elif directive.startswith("PARAMETER "):
            key = directive.split(" ", 1)[1]
            written = value if key not in LIST_PARAMS else quote(value, key)
            lines.append(f"{directive} {written}")
            expected.append((key, value))
        else:
            check_text(value, directive.lower())
            lines.append(f'{directive} """{value}"""')
            expected.append((directive.lower(), value))
    text = "\n".join(lines) + "\n"
    parsed = parse_modelfile(text)
    if parsed != expected:  # never write a Modelfile that Ollama would read differently
        raise InputError(f"internal error: the Modelfile would be read back as {parsed!r}")
    return text


def build_modelfile(out, model_dir, gguf=None, base=None, adapter=None, recipe_dir=None,
                    system=None, params=(), families=FAMILIES):
    """(Modelfile text, Detected) for the given inputs."""
    if bool(gguf) == bool(base):
        raise InputError("give either --gguf PATH or --base GGUF (with optional --adapter)")
    if adapter and not base:
        raise InputError("--adapter needs --base")
    tokenizer = load_tokenizer(model_dir)
    detected = detect(tokenizer, families)

    settings, settings_path = read_deploy_json(recipe_dir) if recipe_dir else ({}, None)
    chosen_system = detected.default_system
    if "system" in settings:
        if not isinstance(settings["system"], str):
            raise InputError("expected a string", settings_path, field="system")
        chosen_system = settings["system"]
    if system is not None:
        chosen_system = system
    if chosen_system is not None:
        check_text(chosen_system, "system")

    merged = {"stop": list(detected.family.stops)}
    for key, value in settings.items():
        if key == "system":
            continue
        values = parse_param(key, value, settings_path)
        merged[key] = merged.get(key, []) + values if key in LIST_PARAMS else values
    for item in params:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--param {item!r}: expected key=value", field="param")
        key = key.strip()
        values = parse_param(key, value)
        merged[key] = merged.get(key, []) + values if key in LIST_PARAMS else values
    merged["stop"] = list(dict.fromkeys(merged["stop"]))

    main = gguf or base
    main_path = Path(main)
    if main_path.exists():
        source = modelfile_path_value(main_path, out, "from")
    elif gguf or str(main).endswith(".gguf") or "/" in str(main) or os.sep in str(main):
        raise FileNotFoundError(f"{main}: no such GGUF file")
    else:  # an Ollama model name, e.g. llama3.1:8b
        source = path_value(str(main), "from")
    adapter_value = None
    if adapter:
        if not Path(adapter).exists():
            raise FileNotFoundError(f"{adapter}: no such adapter file")
        adapter_value = modelfile_path_value(adapter, out, "adapter")

    header = [
        "Modelfile written by deploy.ollama",
        f"chat template: {detected.family.label}, matched tokenizer.apply_chat_template on "
        f"{detected.probes} probe conversations",
        "no BOS in TEMPLATE: Ollama adds it from the GGUF metadata",
    ] + [f"note: {n}" for n in detected.notes]
    commands = build_commands(source, adapter_value, detected.template, chosen_system, merged)
    return serialize(commands, header), detected


def write_modelfile(output, model_dir, gguf=None, base=None, adapter=None, recipe_dir=None, system=None,
                    params=(), force=False):
    """build_modelfile, written atomically to output (an existing one needs force); returns Detected."""
    check_output(output, force)
    text, detected = build_modelfile(output, model_dir, gguf=gguf, base=base, adapter=adapter,
                                     recipe_dir=recipe_dir, system=system, params=params)
    with atomic_open(output, force=force) as fh:
        fh.write(text)
    print(f"wrote {output} (chat template {detected.family.label})", file=sys.stderr)
    for note in detected.notes:
        print(f"note: {note}", file=sys.stderr)
    return detected


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m deploy.ollama", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--gguf", help="GGUF model file (FROM)")
    src.add_argument("--base", help="base GGUF file (FROM) for --adapter, or an Ollama model name")
    parser.add_argument("--adapter", help="LoRA adapter as GGUF (ADAPTER)")
    parser.add_argument("--model", required=True, help="HF model dir whose tokenizer gives the chat template")
    parser.add_argument("--recipe-dir", help="folder whose deploy.json (if present) gives system/stop/parameters "
                        "(or that JSON file itself)")
    parser.add_argument("--system", help="system prompt (overrides deploy.json and the template's default)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="Ollama PARAMETER, repeatable (stop=... adds a stop string)")
    parser.add_argument("-o", "--output", default="Modelfile", help="Modelfile to write (default: ./Modelfile)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    parser.add_argument("--create", metavar="NAME", help="then run `ollama create NAME -f Modelfile` if ollama is installed")
    args = parser.parse_args(argv)

    write_modelfile(args.output, args.model, gguf=args.gguf, base=args.base, adapter=args.adapter,
                    recipe_dir=args.recipe_dir, system=args.system, params=args.param, force=args.force)
    if args.create:
        command = ["ollama", "create", args.create, "-f", str(args.output)]
        if shutil.which("ollama") is None:
            print("ollama is not installed; to create the model run:\n  " + shlex.join(command), file=sys.stderr)
            return 0
        return subprocess.run(command).returncode
    return 0


main = cli(main)

if __name__ == "__main__":
    sys.exit(main())
