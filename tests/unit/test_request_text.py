"""Which characters a request's strings may carry (tagih.domain.text), and that the OpenAPI
document states the same rule as each text field's pattern."""

from __future__ import annotations

import re

import pytest
from pydantic import Field, ValidationError

from tagih.domain.text import (
    MULTILINE_PATTERN,
    NOT_BLANK,
    NOT_BLANK_LINE_PATTERN,
    SINGLE_LINE_PATTERN,
    RequestBody,
    refused_character,
)


class Note(RequestBody):
    multiline_fields = frozenset({"body"})

    title: str = Field(max_length=50)
    body: str | None = None
    tags: list[str] = Field(default_factory=list)
    kind: str = Field(default="a", pattern="^[a-z]$")
    name: str = Field(default="x", pattern=NOT_BLANK)


@pytest.mark.parametrize(
    ("char", "refused_in_one_line", "refused_in_many"),
    [
        ("\x00", True, True),
        ("\x07", True, True),
        ("\t", True, False),
        ("\n", True, False),
        ("\r", True, True),
        ("\x7f", True, True),
        ("\x85", True, True),
        ("\u202e", True, True),
        ("\u2066", True, True),
        ("\ud800", True, True),
        ("\u200f", False, False),  # a right-to-left mark is ordinary Arabic/Hebrew text
        ("é", False, False),
        ("✅", False, False),
    ],
)
def test_the_refused_characters(char: str, refused_in_one_line: bool, refused_in_many: bool) -> None:
    assert (refused_character(f"a{char}b") == char) is refused_in_one_line
    assert (refused_character(f"a{char}b", multiline=True) == char) is refused_in_many


def test_a_refusal_names_the_field_and_the_character() -> None:
    with pytest.raises(ValidationError) as refused:
        Note(title="ok", tags=["fine", "bad\u202e"])

    (error,) = refused.value.errors()
    assert error["loc"] == ("tags",)
    assert "U+202E" in error["msg"]


def test_multiline_fields_take_tab_and_newline_and_others_do_not() -> None:
    assert Note(title="t", body="line 1\n\tline 2").body == "line 1\n\tline 2"
    with pytest.raises(ValidationError):
        Note(title="line 1\nline 2")


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError) as refused:
        Note.model_validate({"title": "t", "status": "paid"})
    assert refused.value.errors()[0]["type"] == "extra_forbidden"


def test_the_schema_states_the_rule_on_plain_text_fields_only() -> None:
    properties = Note.model_json_schema()["properties"]

    assert properties["title"]["pattern"] == SINGLE_LINE_PATTERN
    assert [v.get("pattern") for v in properties["body"]["anyOf"]] == [MULTILINE_PATTERN, None]
    assert properties["kind"]["pattern"] == "^[a-z]$"  # its own, stricter one is kept
    assert properties["name"]["pattern"] == NOT_BLANK_LINE_PATTERN  # visible and safe, in one pattern
    assert re.fullmatch(NOT_BLANK_LINE_PATTERN, " PT Maju ")
    assert not re.fullmatch(NOT_BLANK_LINE_PATTERN, "   ")
    assert not re.fullmatch(NOT_BLANK_LINE_PATTERN, "PT\x00Maju")
    # the documented pattern and the check agree, as a client's validator would read it
    assert re.fullmatch(SINGLE_LINE_PATTERN, "PT Maju ✅")
    assert not re.fullmatch(SINGLE_LINE_PATTERN, "PT\u202eMaju")
    assert re.fullmatch(MULTILINE_PATTERN, "a\nb")
    assert not re.fullmatch(SINGLE_LINE_PATTERN, "a\nb")
