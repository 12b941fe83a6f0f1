"""Writing Python source safely: string literals, comments, values and imports. Stdlib only.

Everything the exporter embeds that came from outside (prompts, paths, study and GPU names) passes
through ``string_literal`` or ``comment``, never through an f-string into code: a prompt holding
quotes, backslashes or newlines cannot end its literal, and a study name holding a newline cannot
end its comment. The output follows ``ruff format``'s style (double quotes unless that needs more
escapes, 88 columns) so a formatted snippet stays as it is.
"""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

LINE_WIDTH = 88
"""``ruff format``'s default: the snippet must fit a user's project, not only ours."""
INDENT = "    "


@dataclass(frozen=True)
class Name:
    """An attribute of a module, e.g. ``torch.bfloat16`` or ``diffusers.TorchAoConfig``."""

    module: str
    attr: str


@dataclass(frozen=True)
class Call:
    """A call of a ``Name`` with literal or nested arguments, e.g. ``PerRow()``."""

    func: Name
    args: tuple[Value, ...] = ()
    kwargs: tuple[tuple[str, Value], ...] = ()


@dataclass(frozen=True)
class Code:
    """Source text written by the exporter itself (never text from outside), e.g. ``device``."""

    text: str


Value = None | bool | int | float | str | Name | Call | Code | list["Value"] | dict[str, "Value"]


_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Mn", "Mc", "Me"})


def _is_plain(char: str) -> bool:
    """A character written as itself: printable, in the Basic Multilingual Plane, and of a width editors and
    ruff agree on (no control, format, combining or unassigned characters, no line separators)."""
    return char.isprintable() and ord(char) <= 0xFFFF and unicodedata.category(char) not in _UNSAFE_CATEGORIES


def _char_width(char: str) -> int:
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def text_width(text: str) -> int:
    """Columns ``text`` takes as ruff counts them (East Asian wide characters take two)."""
    return sum(_char_width(c) for c in text)


def _quote_for(text: str) -> str:
    """Double quotes unless the text holds more double than single quotes (as ``ruff format`` chooses)."""
    return "'" if text.count('"') > text.count("'") else '"'


def _escape(char: str, quote: str) -> str:
    if char == quote:
        return "\\" + char
    if char == "\\":
        return "\\\\"
    if char == "\n":
        return "\\n"
    if char == "\r":
        return "\\r"
    if char == "\t":
        return "\\t"
    if _is_plain(char):
        return char
    # Control characters, separators, combining marks, lone surrogates, characters outside the BMP:
    # the escape ``repr`` writes (or \U escapes), so the literal's width is exactly its length.
    escaped = repr(char)[1:-1]
    return escaped if escaped != char else f"\\U{ord(char):08x}"


def string_literal(text: str) -> str:
    """A one-line Python literal that evaluates to exactly ``text``, whatever characters it holds."""
    quote = _quote_for(text)
    return quote + "".join(_escape(c, quote) for c in text) + quote


def _chunks(text: str, width: int) -> list[str]:
    """Pieces of ``text`` whose literals fit ``width``: words kept whole where possible, breaks after newlines."""
    pieces: list[str] = []
    current = ""
    word = ""

    def fits(candidate: str) -> bool:
        return text_width(string_literal(candidate)) <= width

    def push_word() -> None:
        nonlocal current, word
        while word:
            if fits(current + word):
                current, word = current + word, ""
            elif current:
                pieces.append(current)
                current = ""
            else:  # one word longer than a line: split it by characters
                cut = max(1, max(n for n in range(1, len(word) + 1) if n == 1 or fits(word[:n])))
                pieces.append(word[:cut])
                word = word[cut:]

    for char in text:
        word += char
        if char in " \n":
            push_word()
            if char == "\n" and current:
                pieces.append(current)
                current = ""
    push_word()
    if current:
        pieces.append(current)
    return pieces or [""]


def assign_string(name: str, text: str) -> str:
    """``name = "text"``, as parenthesised implicit concatenation when one line would be too long."""
    one_line = f"{name} = {string_literal(text)}"
    if text_width(one_line) <= LINE_WIDTH:
        return one_line
    # ruff format joins the pieces wherever the whole literal fits on its own line in the parentheses.
    whole = string_literal(text)
    parts = [text] if text_width(INDENT + whole) <= LINE_WIDTH else _chunks(text, LINE_WIDTH - len(INDENT))
    body = "\n".join(INDENT + string_literal(p) for p in parts)
    return f"{name} = (\n{body}\n)"


def comment(text: str) -> str:
    """``# text`` on one line: whitespace (newlines, separators) becomes spaces, other unusual characters ``?``."""
    clean = "".join(c if _is_plain(c) else " " if c.isspace() else "?" for c in text)
    return ("# " + " ".join(clean.split())).rstrip()


def comment_lines(text: str, width: int = LINE_WIDTH) -> list[str]:
    """``comment`` wrapped at word boundaries to ``width`` columns (a longer word is cut)."""
    words: list[str] = []
    for word in comment(text)[2:].split():
        while text_width(word) > width - 2:
            cut = max(n for n in range(1, len(word) + 1) if n == 1 or text_width(word[:n]) <= width - 2)
            words.append(word[:cut])
            word = word[cut:]
        words.append(word)
    lines: list[str] = []
    current = ""
    for word in words:
        if current and text_width("# " + current + " " + word) > width:
            lines.append("# " + current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        lines.append("# " + current)
    return lines


@dataclass
class Imports:
    """The imports a snippet needs, rendered in the order ``ruff``'s isort rules expect."""

    modules: set[str] = field(default_factory=set)
    names: dict[tuple[str, str], str] = field(default_factory=dict)
    """(module, attr) -> the local name (the attr, or an alias where two modules export one name)."""

    def module(self, module: str) -> str:
        self.modules.add(module)
        return module

    def name(self, ref: Name) -> str:
        """The local name of ``ref``; a second module exporting the same name gets an alias."""
        if ref.module == "torch":
            return f"{self.module('torch')}.{ref.attr}"
        key = (ref.module, ref.attr)
        if key not in self.names:
            taken = set(self.names.values())
            local = ref.attr
            if local in taken:
                local = ref.module.split(".")[0].capitalize() + ref.attr
            self.names[key] = local
        return self.names[key]

    def render(self) -> list[str]:
        """The standard library's imports, a blank line, then the others (isort's sections); in each,
        ``import x`` lines first, then ``from x import y`` lines, each sorted by module."""
        stdlib = Imports(
            {m for m in self.modules if _is_stdlib(m)}, {k: v for k, v in self.names.items() if _is_stdlib(k[0])}
        )
        others = Imports(self.modules - stdlib.modules, {k: v for k, v in self.names.items() if k not in stdlib.names})
        if stdlib.modules or stdlib.names:
            return [*stdlib._section(), "", *others._section()] if others.modules or others.names else stdlib._section()
        return self._section()

    def _section(self) -> list[str]:
        lines = [f"import {m}" for m in sorted(self.modules)]
        plain: dict[str, list[str]] = {}
        aliased: dict[str, list[str]] = {}
        for (module, attr), local in self.names.items():
            if local == attr:
                plain.setdefault(module, []).append(attr)
            else:
                aliased.setdefault(module, []).append(f"{attr} as {local}")
        for module in sorted(set(plain) | set(aliased)):
            # isort keeps each aliased name in a statement of its own, ordered with the others by first name.
            statements = [[a] for a in aliased.get(module, [])]
            if module in plain:
                statements.append(sorted(plain[module], key=_member_order))
            for names in sorted(statements, key=lambda s: _member_order(s[0])):
                line = f"from {module} import {', '.join(names)}"
                if len(line) > LINE_WIDTH:
                    line = f"from {module} import (\n" + "".join(f"{INDENT}{n},\n" for n in names) + ")"
                lines.append(line)
        return lines


def _is_stdlib(module: str) -> bool:
    return module.split(".")[0] in sys.stdlib_module_names


def _member_order(name: str) -> tuple[int, str]:
    """isort's order-by-type: CONSTANTS, then Classes, then functions and variables."""
    if name.isupper() and len(name) > 1:
        return 0, name
    return (1 if name[:1].isupper() else 2), name.lower()


@dataclass(frozen=True)
class Group:
    """Bracketed items that ``format_node`` writes on one line, or broken as ``ruff format`` breaks them."""

    head: str
    """Everything up to and including the opening bracket, e.g. ``x = f(``."""
    items: tuple[Node, ...]
    tail: str
    """The closing bracket and what follows it, e.g. ``).images[0]``."""


Node = str | Group


def flat(node: Node) -> str:
    if isinstance(node, str):
        return node
    return node.head + ", ".join(flat(i) for i in node.items) + node.tail


def format_node(node: Node, indent: str = "", after: str = "") -> list[str]:
    """Lines of ``node`` at ``indent``, followed by ``after`` (``,`` inside a broken parent).

    As ``ruff format`` does: the whole on one line if it fits; else the items on one indented line
    between the brackets if that fits; else one item per line with a trailing comma, recursively.
    """
    one_line = indent + flat(node) + after
    if isinstance(node, str) or text_width(one_line) <= LINE_WIDTH or not node.items:
        return [one_line]
    inner = indent + INDENT
    hugged = inner + ", ".join(flat(i) for i in node.items)
    if text_width(hugged) <= LINE_WIDTH:
        return [indent + node.head, hugged, indent + node.tail + after]
    lines = [indent + node.head]
    for item in node.items:
        lines += format_node(item, inner, ",")
    return [*lines, indent + node.tail + after]


def value_node(value: Value, imports: Imports, prefix: str = "") -> Node:
    """``value`` as a node to format; ``prefix`` goes before it (``key=``, ``"key": ``, ``x = ``)."""
    if value is None or isinstance(value, (bool, int, float)):
        return prefix + repr(value)
    if isinstance(value, str):
        return prefix + string_literal(value)
    if isinstance(value, Code):
        return prefix + value.text
    if isinstance(value, Name):
        return prefix + imports.name(value)
    if isinstance(value, Call):
        return call_node(prefix + imports.name(value.func), value.args, value.kwargs, imports)
    if isinstance(value, list):
        return Group(prefix + "[", tuple(value_node(v, imports) for v in value), "]")
    if isinstance(value, dict):
        items = tuple(value_node(v, imports, f"{string_literal(k)}: ") for k, v in value.items())
        return Group(prefix + "{", items, "}")
    raise TypeError(f"cannot write {type(value).__name__} as Python source")


def call_node(
    callee: str,
    args: Iterable[Value],
    kwargs: Iterable[tuple[str, Value]],
    imports: Imports,
    tail: str = "",
) -> Node:
    """``callee(args, key=value, ...)tail`` as a node (a plain string when there are no arguments)."""
    items = tuple(value_node(a, imports) for a in args) + tuple(value_node(v, imports, f"{k}=") for k, v in kwargs)
    if not items:
        return f"{callee}(){tail}"
    return Group(f"{callee}(", items, ")" + tail)
