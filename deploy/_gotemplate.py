"""A small interpreter for the subset of Go's text/template that deploy.ollama writes into TEMPLATE.

It exists so that tests (and `deploy.ollama --verify`) can render the exact TEMPLATE text of a
Modelfile the way Ollama would, without an Ollama binary. Supported, with Go's semantics:

- text and actions `{{ ... }}`, whitespace trim markers `{{- ` and ` -}}`, comments `{{/* */}}`;
- `if` / `else if` / `else` / `end`, `range` (with `$i, $x :=` or `$x :=`, and `else`);
- variables (`$`, `$x := ...`, `$x = ...`, scoped to the enclosing control structure);
- fields `.A.B`, `$.A`, `$x.A`, `(pipeline).A`; string, raw string, int and bool literals;
- functions and, or, not, eq, ne, lt, le, gt, ge, len, slice, index; pipelines with `|`.

Anything else (with, define, template, block, printf, ...) raises TemplateError instead of
being guessed at, so a template that this module renders is one whose meaning is known.
"""
import re

SPACE = " \t\r\n"


class TemplateError(ValueError):
    pass


# --- lexing and parsing ---

class _Text:
    def __init__(self, text):
        self.text = text


class _Action:
    def __init__(self, pipe):
        self.pipe = pipe


class _If:
    def __init__(self, pipe):
        self.pipe, self.body, self.orelse = pipe, [], None


class _Range:
    def __init__(self, pipe):
        self.pipe, self.body, self.orelse = pipe, [], None


_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>-?\d+)
  | (?P<declare>:=)
  | (?P<punct>[()|,=])
  | (?P<var>\$[A-Za-z0-9_]*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
  | (?P<dot>\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
""", re.VERBOSE)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


def _go_string(literal):
    body, out, i = literal[1:-1], [], 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = body[i + 1]
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 2
        elif e in "uU":
            width = 4 if e == "u" else 8
            digits = body[i + 2:i + 2 + width]
            if len(digits) != width or not re.fullmatch(r"[0-9a-fA-F]+", digits):
                raise TemplateError(f"bad escape in string literal {literal}")
            out.append(chr(int(digits, 16)))
            i += 2 + width
        else:
            raise TemplateError(f"unsupported escape \\{e} in string literal {literal}")
    return "".join(out)


def _split(source):
    """Yield ('text', str) and ('action', tokens) items, applying trim markers."""
    items, pos = [], 0
    while True:
        start = source.find("{{", pos)
        if start < 0:
            items.append(["text", source[pos:]])
            break
        text = source[pos:start]
        i = start + 2
        if source.startswith("-", i) and i + 1 < len(source) and source[i + 1] in SPACE:
            text = text.rstrip(SPACE)
            i += 2
        items.append(["text", text])
        # comment
        j = i
        while j < len(source) and source[j] in SPACE:
            j += 1
        if source.startswith("/*", j):
            end = source.find("*/", j + 2)
            if end < 0:
                raise TemplateError("unclosed comment")
            k = end + 2
            trim_right = False
            m = re.match(r"[ \t\r\n]+-}}", source[k:])
            if m:
                trim_right, k = True, k + m.end()
            elif source.startswith("}}", k):
                k += 2
            else:
                raise TemplateError("comment must be alone in its action")
            items.append(["action", []])
            pos = k
            if trim_right:
                pos = _skip_space(source, pos)
            continue
        tokens, trim_right = [], False
        while True:
            if i >= len(source):
                raise TemplateError("unclosed action")
            m = re.match(r"[ \t\r\n]+-}}", source[i:])
            if m:
                i += m.end()
                trim_right = True
                break
            if source.startswith("}}", i):
                i += 2
                break
            m = _TOKEN.match(source, i)
            if not m:
                raise TemplateError(f"unexpected character {source[i]!r} in action at offset {i}")
            tokens.append((m.lastgroup, m.group()))
            i = m.end()
        items.append(["action", tokens])
        pos = _skip_space(source, i) if trim_right else i
    return items


def _skip_space(source, pos):
    while pos < len(source) and source[pos] in SPACE:
        pos += 1
    return pos


class _Tokens:
    """Tokens of one action; whitespace is skipped except where it separates a field from its operand."""

    def __init__(self, tokens):
        self.raw = tokens
        self.i = 0

    def _skip(self):
        while self.i < len(self.raw) and self.raw[self.i][0] == "ws":
            self.i += 1

    def peek(self, offset=0):
        self._skip()
        j, seen = self.i, -1
        while j < len(self.raw):
            if self.raw[j][0] != "ws":
                seen += 1
                if seen == offset:
                    return self.raw[j]
            j += 1
        return (None, None)

    def take(self):
        tok = self.peek()
        self.i += 1
        return tok

    def adjacent_field(self):
        """The next raw token is a field chained directly (no space) onto the previous operand."""
        return self.i < len(self.raw) and self.raw[self.i][0] == "field"

    def done(self):
        return self.peek() == (None, None)


def _parse_pipeline(ts, allow_decl=True, range_decl=False):
    """pipeline := [decl] command ('|' command)*; returns dict."""
    decl, op = [], None
    if allow_decl and ts.peek()[0] == "var":
        # lookahead for `$x :=`, `$x =`, `$i, $x :=`
        if ts.peek(1) == ("declare", ":=") or ts.peek(1) == ("punct", "="):
            decl = [ts.take()[1]]
            op = ts.take()[1]
        elif range_decl and ts.peek(1) == ("punct", ",") and ts.peek(2)[0] == "var" and ts.peek(3) == ("declare", ":="):
            decl = [ts.take()[1]]
            ts.take()
            decl.append(ts.take()[1])
            op = ts.take()[1]
    commands = [_parse_command(ts)]
    while ts.peek() == ("punct", "|"):
        ts.take()
        commands.append(_parse_command(ts))
    return {"decl": decl, "op": op, "commands": commands}


def _parse_command(ts):
    args = []
    while not ts.done() and ts.peek() not in (("punct", "|"), ("punct", ")")):
        args.append(_parse_operand(ts))
    if not args:
        raise TemplateError("empty command")
    return args


def _parse_operand(ts):
    kind, value = ts.take()
    if kind == "punct" and value == "(":
        inner = _parse_pipeline(ts, allow_decl=False)
        if ts.take() != ("punct", ")"):
            raise TemplateError("unclosed parenthesis")
        node = ("pipe", inner)
    elif kind == "string":
        node = ("const", _go_string(value))
    elif kind == "raw":
        node = ("const", value[1:-1])
    elif kind == "number":
        node = ("const", int(value))
    elif kind == "ident" and value in ("true", "false"):
        node = ("const", value == "true")
    elif kind == "ident":
        if value not in FUNCS:
            raise TemplateError(f"function {value!r} is not supported")
        node = ("func", value)
    elif kind == "var":
        node = ("var", value)
    elif kind == "dot":
        node = ("dot", None)
    elif kind == "field":
        return ("field", ("dot", None), value[1:].split("."))
    else:
        raise TemplateError(f"unexpected {value!r}")
    if ts.adjacent_field():  # `$x.Field` or `(pipeline).Field`
        return ("field", node, ts.take()[1][1:].split("."))
    return node


def parse(source):
    """Parse template text into a node list (raises TemplateError on anything unsupported)."""
    root = []
    stack = [("root", root, None)]  # (kind, list being filled, control node)
    for kind, payload in _split(source):
        if kind == "text":
            if payload:
                stack[-1][1].append(_Text(payload))
            continue
        if not payload:  # comment
            continue
        ts = _Tokens(payload)
        head = ts.peek()
        if head == ("ident", "if"):
            ts.take()
            node = _If(_parse_pipeline(ts))
            stack[-1][1].append(node)
            stack.append(("if", node.body, node))
        elif head == ("ident", "range"):
            ts.take()
            node = _Range(_parse_pipeline(ts, range_decl=True))
            if len(node.pipe["decl"]) and node.pipe["op"] != ":=":
                raise TemplateError("range variables must be declared with :=")
            stack[-1][1].append(node)
            stack.append(("range", node.body, node))
        elif head == ("ident", "else"):
            ts.take()
            ctl, _, node = stack[-1]
            if ctl not in ("if", "range") or node.orelse is not None:
                raise TemplateError("unexpected {{else}}")
            node.orelse = []
            if ts.peek() == ("ident", "if"):
                if ctl != "if":
                    raise TemplateError("{{else if}} is only supported after {{if}}")
                ts.take()
                inner = _If(_parse_pipeline(ts))
                node.orelse.append(inner)
                # `{{else if B}}` is `{{else}}{{if B}}` whose {{end}} is shared with the outer if
                stack[-1] = ("if", inner.body, inner)
            else:
                stack[-1] = (ctl, node.orelse, node)
        elif head == ("ident", "end"):
            ts.take()
            if len(stack) == 1:
                raise TemplateError("unexpected {{end}}")
            stack.pop()
        elif head[0] == "ident" and head[1] in ("with", "define", "template", "block", "break", "continue", "nil"):
            raise TemplateError(f"{{{{{head[1]}}}}} is not supported")
        else:
            stack[-1][1].append(_Action(_parse_pipeline(ts)))
        if not ts.done():
            raise TemplateError(f"unexpected {ts.peek()[1]!r} in action")
    if len(stack) != 1:
        raise TemplateError(f"unclosed {{{{{stack[-1][0]}}}}}")
    return root


# --- evaluation ---

class _Missing:
    pass


def truth(value):
    """Go's notion of truth for if/and/or/not."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, (str, list, tuple, dict)):
        return len(value) > 0
    return True


def _basic(value):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return None


def _compare(name, a, b):
    ka, kb = _basic(a), _basic(b)
    if ka is None or kb is None:
        raise TemplateError(f"{name}: non-comparable value")
    if ka != kb and not {ka, kb} <= {"int", "float"}:
        raise TemplateError(f"{name}: incompatible types for comparison")
    if name in ("lt", "le", "gt", "ge") and ka == "bool":
        raise TemplateError(f"{name}: invalid type for comparison")
    return {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[name] if name != "eq" else a == b


def _eq(*args):
    if len(args) < 2:
        raise TemplateError("eq: missing argument for comparison")
    return any(_compare("eq", args[0], other) for other in args[1:])


def _len(value):
    if not isinstance(value, (str, list, tuple, dict)):
        raise TemplateError("len of a value that has no length")
    return len(value.encode("utf-8")) if isinstance(value, str) else len(value)


def _slice(value, *idx):
    if not isinstance(value, (list, tuple, str)):
        raise TemplateError("slice of a value that cannot be sliced")
    if isinstance(value, str) and len(idx) > 2:
        raise TemplateError("cannot 3-index slice a string")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in idx) or len(idx) > 3:
        raise TemplateError("slice: bad indexes")
    n = len(value)
    lo = idx[0] if idx else 0
    hi = idx[1] if len(idx) > 1 else n
    if not 0 <= lo <= hi <= n:
        raise TemplateError(f"slice: index out of range [{lo}:{hi}] with length {n}")
    return value[lo:hi]


def _index(value, *keys):
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, (list, tuple)):
            if not isinstance(key, int) or not 0 <= key < len(value):
                raise TemplateError(f"index out of range: {key}")
            value = value[key]
        else:
            raise TemplateError("index of a value that cannot be indexed")
    return value


FUNCS = {
    "eq": _eq,
    "ne": lambda a, b: not _compare("eq", a, b),
    "lt": lambda a, b: _compare("lt", a, b),
    "le": lambda a, b: _compare("le", a, b),
    "gt": lambda a, b: _compare("gt", a, b),
    "ge": lambda a, b: _compare("ge", a, b),
    "not": lambda a: not truth(a),
    "len": _len,
    "slice": _slice,
    "index": _index,
    "and": None,  # short-circuit, handled in _call
    "or": None,
}


class _Scope:
    def __init__(self, data):
        self.frames = [{"$": data}]

    def lookup(self, name):
        for frame in reversed(self.frames):
            if name in frame:
                return frame[name]
        raise TemplateError(f"undefined variable {name}")

    def assign(self, name, value):
        for frame in reversed(self.frames):
            if name in frame:
                frame[name] = value
                return
        raise TemplateError(f"undefined variable {name}")


def _field(value, names):
    for name in names:
        if isinstance(value, dict):
            if name not in value:
                raise TemplateError(f"can't evaluate field {name}")
            value = value[name]
        else:
            raise TemplateError(f"can't evaluate field {name} in a non-struct value")
    return value


def _eval(node, dot, scope):
    kind = node[0]
    if kind == "const":
        return node[1]
    if kind == "dot":
        return dot
    if kind == "var":
        return scope.lookup(node[1])
    if kind == "field":
        return _field(_eval(node[1], dot, scope), node[2])
    if kind == "pipe":
        return _pipeline(node[1], dot, scope)
    if kind == "func":
        raise TemplateError(f"{node[1]} used as a value")
    raise TemplateError(f"bad node {kind}")


def _command(args, dot, scope, final=_Missing):
    head = args[0]
    if head[0] != "func":
        if len(args) > 1 or final is not _Missing:
            raise TemplateError("can't give arguments to a non-function")
        return _eval(head, dot, scope)
    name, rest = head[1], [lambda a=a: _eval(a, dot, scope) for a in args[1:]]
    if final is not _Missing:
        rest.append(lambda: final)
    if name in ("and", "or"):
        if not rest:
            raise TemplateError(f"{name}: missing argument")
        value = None
        for thunk in rest:
            value = thunk()
            if truth(value) != (name == "and"):
                return value
        return value
    try:
        return FUNCS[name](*[thunk() for thunk in rest])
    except TypeError as err:
        raise TemplateError(f"{name}: wrong number of arguments ({err})") from None


def _pipeline(pipe, dot, scope):
    value = _Missing
    for args in pipe["commands"]:
        value = _command(args, dot, scope, value)
    return value


def _declare(pipe, value, scope):
    if not pipe["decl"]:
        return
    name = pipe["decl"][-1]
    if pipe["op"] == ":=":
        scope.frames[-1][name] = value
    else:
        scope.assign(name, value)


def _printable(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int)):
        return str(value)
    if value is None:
        return "<no value>"
    raise TemplateError(f"cannot print a {type(value).__name__}")


def _run(nodes, dot, scope, out):
    for node in nodes:
        if isinstance(node, _Text):
            out.append(node.text)
        elif isinstance(node, _Action):
            value = _pipeline(node.pipe, dot, scope)
            if node.pipe["decl"]:
                _declare(node.pipe, value, scope)
            else:
                out.append(_printable(value))
        elif isinstance(node, _If):
            scope.frames.append({})
            value = _pipeline(node.pipe, dot, scope)
            _declare(node.pipe, value, scope)
            _run(node.body if truth(value) else (node.orelse or []), dot, scope, out)
            scope.frames.pop()
        elif isinstance(node, _Range):
            scope.frames.append({})
            items = _pipeline(node.pipe, dot, scope)
            if isinstance(items, dict):
                pairs = sorted(items.items())
            elif isinstance(items, (list, tuple)):
                pairs = list(enumerate(items))
            elif items is None:
                pairs = []
            else:
                raise TemplateError("range can't iterate over this value")
            if not pairs and node.orelse is not None:
                _run(node.orelse, dot, scope, out)
            for key, item in pairs:
                frame = {}
                decl = node.pipe["decl"]
                if len(decl) == 1:
                    frame[decl[0]] = item
                elif len(decl) == 2:
                    frame[decl[0]], frame[decl[1]] = key, item
                scope.frames.append(frame)
                _run(node.body, item, scope, out)
                scope.frames.pop()
            scope.frames.pop()


def render(source, data):
    """Execute template text against data (dicts stand in for Go maps and structs)."""
    out = []
    _run(parse(source), data, _Scope(data), out)
    return "".join(out)
