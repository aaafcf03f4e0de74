"""The Modelfile language as Ollama reads it: PARAMETER names and types, values written so that they
read back exactly, and a port of Ollama's parser (parser.ParseFile) to check every Modelfile we write."""
import json
import unicodedata

from common.errors import InputError

# --- Ollama PARAMETER names and value types (api.Options / api.Runner) ---

INT_PARAMS = {"num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "num_ctx", "num_batch",
              "num_gpu", "main_gpu", "num_thread", "draft_num_predict"}
FLOAT_PARAMS = {"top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty",
                "frequency_penalty"}
BOOL_PARAMS = {"use_mmap"}
LIST_PARAMS = {"stop"}
PARAMS = INT_PARAMS | FLOAT_PARAMS | BOOL_PARAMS | LIST_PARAMS
GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
            "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}


# --- Modelfile values: writing them safely, and reading them back as Ollama does ---

def go_is_print(ch):
    """strconv.IsPrint: letters, marks, numbers, punctuation, symbols and the ASCII space."""
    return ch == " " or unicodedata.category(ch)[0] in "LMNPS"


def check_text(value, what):
    """Refuse text that Ollama's parser would change or end early: triple quotes, dropped characters."""
    if '"""' in value:
        raise InputError('contains """, which ends a Modelfile value early and cannot be escaped', field=what)
    for i, ch in enumerate(value):
        if ch not in "\n\t" and not go_is_print(ch):
            raise InputError(f"character {ch!r} at offset {i} would be dropped by Ollama's Modelfile parser",
                             field=what)
    return value


def quote(value, what):
    """A Modelfile value that Ollama reads back as exactly `value`."""
    check_text(value, what)
    if '"' in value or "\n" in value:
        return f'"""{value}"""'
    return f'"{value}"'


def path_value(path, what):
    text = str(path)
    if '"' in text or "\n" in text or "\t" in text:
        raise InputError("path contains a quote or control character", text, field=what)
    check_text(text, what)
    return f'"{text}"' if text != text.strip() or " " in text else text


def unquote(s):
    if s[:3] == '"""':
        if len(s) >= 6 and s[-3:] == '"""':
            return s[3:-3], True
        return "", False
    if s[:1] == '"':
        if len(s) >= 2 and s[-1] == '"':
            return s[1:-1], True
        return "", False
    return s, True


COMMANDS = {"from", "license", "template", "system", "adapter", "draft", "renderer", "parser",
            "parameter", "message", "requires"}


class ModelfileError(ValueError):
    pass


def parse_modelfile(text):
    """Port of Ollama's parser.ParseFile: the (name, args) commands Ollama reads from `text`.

    FROM is named "model" and PARAMETER commands by their parameter name, as in Ollama.
    """
    NIL, NAME, VALUE, PARAM, MESSAGE, COMMENT = range(6)
    commands, buf, role, name, curr, line = [], [], "", None, NIL, 1
    if text.startswith("\ufeff"):
        text = text[1:]

    def is_space(r):
        return r in " \t"

    def is_newline(r):
        return r in "\r\n"

    for r in text:
        if is_newline(r):
            line += 1
        # parseRuneForState
        if curr == NIL:
            nxt, r = (COMMENT, "") if r == "#" else (NIL, "") if is_space(r) or is_newline(r) else (NAME, r)
        elif curr == NAME:
            if r.isascii() and r.isalpha():
                nxt = NAME
            elif is_space(r):
                nxt, r = VALUE, ""
            else:
                raise ModelfileError(f"(line {line}): command must be one of {sorted(COMMANDS)}")
        elif curr == VALUE:
            nxt = NIL if is_newline(r) or is_space(r) else VALUE
        elif curr == PARAM:
            if (r.isascii() and r.isalnum()) or r == "_":
                nxt = PARAM
            elif is_space(r):
                nxt, r = VALUE, ""
            else:
                raise ModelfileError(f"(line {line}): unexpected EOF")
        elif curr == MESSAGE:
            if r.isascii() and r.isalpha():
                nxt = MESSAGE
            elif is_space(r):
                nxt, r = VALUE, ""
            else:
                raise ModelfileError(f"(line {line}): unexpected EOF")
        else:  # COMMENT
            nxt, r = (NIL, "") if is_newline(r) else (COMMENT, "")

        if nxt != curr:
            word = "".join(buf)
            if curr == NAME:
                if word.lower() not in COMMANDS:
                    raise ModelfileError(f"(line {line}): command must be one of {sorted(COMMANDS)}")
                s = word.lower()
                if s == "from":
                    name = "model"
                elif s == "parameter":
                    nxt = PARAM
                else:
                    if s == "message":
                        nxt = MESSAGE
                    name = s
            elif curr == PARAM:
                name = word
            elif curr == MESSAGE:
                if word not in ("system", "user", "assistant"):
                    raise ModelfileError(f"(line {line}): message role must be system, user or assistant")
                role = word
            elif curr == VALUE:
                s, ok = unquote(word.strip(" \t\r\n"))
                if not ok or is_space(r):
                    buf.append(r)
                    continue
                if role:
                    s, role = f"{role}: {s}", ""
                commands.append((name, s))
            buf = []
            curr = nxt
        if r and (go_is_print(r)):
            buf.append(r)

    if curr == VALUE:
        s, ok = unquote("".join(buf).strip(" \t\r\n"))
        if not ok:
            raise ModelfileError("unexpected EOF")
        if role:
            s = f"{role}: {s}"
        commands.append((name, s))
    elif curr not in (NIL, COMMENT):
        raise ModelfileError("unexpected EOF")
    if not any(n == "model" for n, _ in commands):
        raise ModelfileError("no FROM line")
    return commands


# --- parameters ---

def parse_param(key, value, source=None):
    """Validate one PARAMETER as Ollama's FormatParams would; returns a list of string values."""
    if key not in PARAMS:
        raise InputError(f"unknown Ollama parameter {key!r} (known: {', '.join(sorted(PARAMS))})", source, field=key)
    values = value if isinstance(value, list) and key in LIST_PARAMS else [value]
    out = []
    for v in values:
        if key in LIST_PARAMS:
            if not isinstance(v, str) or not v:
                raise InputError("stop strings must be non-empty strings", source, field=key)
            check_text(v, key)
            out.append(v)
            continue
        text = json.dumps(v) if isinstance(v, bool) else str(v).strip()
        try:
            if "_" in text:
                raise ValueError
            if key in INT_PARAMS:
                if isinstance(v, (bool, float)):
                    raise ValueError
                text = str(int(text))
            elif key in FLOAT_PARAMS:
                if isinstance(v, bool):
                    raise ValueError
                number = float(text)
                if number != number or number in (float("inf"), float("-inf")):
                    raise ValueError
                text = repr(number) if isinstance(v, float) else text
            else:
                if text not in GO_BOOLS:
                    raise ValueError
        except ValueError:
            kind = "an integer" if key in INT_PARAMS else "a number" if key in FLOAT_PARAMS else "a boolean"
            raise InputError(f"{v!r} is not {kind}", source, field=key) from None
        check_text(text, key)
        if " " in text:
            raise InputError(f"{v!r} contains a space", source, field=key)
        out.append(text)
    return out
