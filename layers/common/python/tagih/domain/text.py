"""Text a caller sends, and the characters Tagih refuses in it.

Names, labels and addresses travel on to PDFs, hosted pages, gateway customers and tenants'
webhooks. A NUL truncates strings in C libraries and some PDF text, other C0/C1 controls break
layouts and logs, a lone surrogate cannot be encoded as UTF-8 at all (DynamoDB and every gateway
would fail on it later), and the bidirectional overrides and isolates (U+202A to U+202E,
U+2066 to U+2069) make a name display as something else ("Trojan Source"). So every string of a
request body refuses them, with 422 naming the field; tab and newline only where a field is
free text that may span lines (``multiline_fields``).

``RequestBody`` is the base of every request model: unknown fields are refused (API.md), and the
same rule is stated in the OpenAPI document as each text field's ``pattern``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator

if TYPE_CHECKING:
    from pydantic import GetJsonSchemaHandler, ValidationInfo
    from pydantic.json_schema import JsonSchemaValue
    from pydantic_core import CoreSchema

# The documented patterns leave lone surrogates out: they are no Unicode scalar value, so no
# pattern engine but Python's (and ECMAScript's) can name them, and no valid UTF-8 text holds one;
# only a JSON escape (\ud800) can, and the check below refuses it.
_REFUSED_EVERYWHERE = r"\x00-\x08\x0B-\x1F\x7F-\x9F\u202A-\u202E\u2066-\u2069"
_REFUSED_IN_ONE_LINE = r"\x00-\x1F\x7F-\x9F\u202A-\u202E\u2066-\u2069"
_SURROGATES = r"\uD800-\uDFFF"
MULTILINE_PATTERN = f"^[^{_REFUSED_EVERYWHERE}]*$"
SINGLE_LINE_PATTERN = f"^[^{_REFUSED_IN_ONE_LINE}]*$"
# What an organization id is made of (the identity provider's ids, ``org_…``): checked wherever one
# arrives outside the authorizer, a path or a queued report.
ORGANIZATION_ID_PATTERN = r"^[A-Za-z0-9_-]+$"
# A field that must hold something visible validates with this search pattern; its schema states
# it together with the refused characters (one JSON Schema ``pattern`` per string).
NOT_BLANK = r"\S"
NOT_BLANK_LINE_PATTERN = f"^[^{_REFUSED_IN_ONE_LINE}]*[^\\s{_REFUSED_IN_ONE_LINE}][^{_REFUSED_IN_ONE_LINE}]*$"
_MULTILINE = re.compile(f"[{_REFUSED_EVERYWHERE}{_SURROGATES}]")
_SINGLE_LINE = re.compile(f"[{_REFUSED_IN_ONE_LINE}{_SURROGATES}]")


def refused_character(value: str, *, multiline: bool = False) -> str | None:
    """The first character of ``value`` a request may not carry, or None."""
    found = (_MULTILINE if multiline else _SINGLE_LINE).search(value)
    return found.group() if found else None


def check_text(value: Any, *, multiline: bool = False) -> None:
    """``ValueError`` naming the first refused character in ``value``, a string or any list or
    mapping of them (keys included)."""
    if isinstance(value, str):
        char = refused_character(value, multiline=multiline)
        if char is not None:
            allowed = " (tab and newline are allowed here)" if multiline else ""
            raise ValueError(
                f"Must not contain U+{ord(char):04X}: control characters, lone surrogates and "
                f"bidirectional overrides are refused{allowed}."
            )
    elif isinstance(value, Mapping):
        for key, item in value.items():
            check_text(key, multiline=False)
            check_text(item, multiline=multiline)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            check_text(item, multiline=multiline)


class RequestBody(BaseModel):
    """A request body: unknown fields refused, every string checked by ``check_text``."""

    model_config = ConfigDict(extra="forbid")

    # Fields whose text may span lines (a description), where tab and newline are allowed.
    multiline_fields: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="after")
    @classmethod
    def _refuse_unsafe_text(cls, value: Any, info: ValidationInfo) -> Any:
        check_text(value, multiline=info.field_name in cls.multiline_fields)
        return value

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        for name, prop in target.get("properties", {}).items():
            pattern = MULTILINE_PATTERN if name in cls.multiline_fields else SINGLE_LINE_PATTERN
            for variant in (prop, *prop.get("anyOf", ())):
                if variant.get("type") == "string" and variant.get("pattern") == NOT_BLANK:
                    variant["pattern"] = NOT_BLANK_LINE_PATTERN
                elif _is_free_text(variant):
                    variant["pattern"] = pattern
        return schema


def _is_free_text(schema: Mapping[str, Any]) -> bool:
    """A plain string property: not an enum, a format (date-time, email…) or one already patterned."""
    return schema.get("type") == "string" and not {"enum", "const", "format", "pattern"} & schema.keys()
