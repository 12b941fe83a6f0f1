"""Writing Python source safely: any text becomes a literal that evaluates back to itself, or a harmless comment."""

from __future__ import annotations

import ast

import pytest
from export_helpers import ruff_problems
from hypothesis import given, settings
from hypothesis import strategies as st

from qco_tune.core.pycode import (
    LINE_WIDTH,
    Imports,
    Name,
    assign_string,
    comment,
    comment_lines,
    string_literal,
    text_width,
)

NASTY = [
    "",
    'a "quoted" prompt',
    "it's",
    "'''triple single'''",
    '"""triple double"""',
    "\\",
    "ends with a backslash \\",
    'C:\\Users\\me\\"models"\\',
    "line one\nline two\n",
    "\r\n\t\x00\x1b\x7f",
    "\u2028line separator\u2029paragraph",
    "emoji 🚀 and 中文",
    "lone surrogate \udc80",
    '")\nimport os\nos.system("echo pwned")\n("',
    "#",
    "{braces} and f-string {x!r}",
]


@pytest.mark.parametrize("text", NASTY)
def test_string_literal_round_trips(text: str) -> None:
    literal = string_literal(text)
    assert "\n" not in literal and "\r" not in literal
    assert ast.literal_eval(literal) == text


@pytest.mark.parametrize("text", [*NASTY, "word " * 60, "x" * 300, "a\n" * 5 + "b " * 80])
def test_assigned_string_parses_to_one_assignment_of_the_text(text: str) -> None:
    source = assign_string("prompt", text)
    tree = ast.parse(source)
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Assign)
    scope: dict[str, object] = {}
    exec(compile(tree, "x.py", "exec"), scope)
    assert scope["prompt"] == text
    assert all(text_width(line) <= LINE_WIDTH for line in source.splitlines())


@pytest.mark.parametrize(
    "text",
    [
        "一只猫在泳池里喝玛格丽特，电影剧照，" * 8,
        "a cat 🐱 sipping a margarita 🍹 " * 6,
        "e\u0301 combining accents and zero\u200bwidth spaces " * 5,
        "x" * 85,
        "word " * 17,
        "ascii then 全角文字 " * 9,
    ],
)
def test_long_and_wide_text_is_formatted_as_ruff_formats_it(text: str) -> None:
    assert ruff_problems(assign_string("prompt", text) + "\n") == ""


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_is_quoted_safely(text: str) -> None:
    source = assign_string("prompt", text)
    tree = ast.parse(source)
    assert len(tree.body) == 1
    scope: dict[str, object] = {}
    exec(compile(tree, "x.py", "exec"), scope)
    assert scope["prompt"] == text


@pytest.mark.parametrize("text", NASTY)
def test_comment_is_one_harmless_line(text: str) -> None:
    line = comment("study " + text)
    assert line.startswith("#") and len(line.splitlines()) == 1
    tree = ast.parse(line + "\nx = 1\n")
    assert len(tree.body) == 1  # nothing in the comment became code


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_wrapped_comments_never_become_code(text: str) -> None:
    lines = comment_lines(text)
    assert all(line.startswith("#") and text_width(line) <= LINE_WIDTH for line in lines)
    assert ast.parse("\n".join(lines) + "\n").body == []


def test_imports_alias_a_second_module_exporting_the_same_name() -> None:
    imports = Imports()
    assert imports.name(Name("diffusers", "BitsAndBytesConfig")) == "BitsAndBytesConfig"
    assert imports.name(Name("transformers", "BitsAndBytesConfig")) == "TransformersBitsAndBytesConfig"
    assert imports.name(Name("torch", "bfloat16")) == "torch.bfloat16"
    assert imports.render() == [
        "import torch",
        "from diffusers import BitsAndBytesConfig",
        "from transformers import BitsAndBytesConfig as TransformersBitsAndBytesConfig",
    ]
