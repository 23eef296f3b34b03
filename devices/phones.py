"""Chinese phone numbers in one national form, the key of the caller-number lookup. Pure.

The 120 dispatch system sees the caller's number as the exchange delivers it: with or without
``+86``/``0086``, with the trunk ``0`` of the area code or without it, with spaces, dashes,
dots or parentheses. :func:`normalise_phone` brings all of them to one form:

- mobile: the 11 digits ``1[3-9]xxxxxxxxx``, e.g. ``13800138000``;
- landline: ``0`` + area code + local number, e.g. ``01012345678`` (Beijing) or
  ``057187654321`` (Hangzhou).

Area codes: ``10`` and ``20``-``29`` have two digits, every other one three (the national
numbering plan); local numbers have 7 or 8 digits and do not start with 0 or 1. A local number
without its area code is refused unless ``default_area_code`` is given: the registry stores
full numbers only.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from devices.registry import RegistryError

_SEPARATORS: Final = re.compile(r"[\s\-().\u3000\uff08\uff09]+")
_MOBILE: Final = re.compile(r"^1[3-9]\d{9}$")
_LOCAL: Final = re.compile(r"^[2-9]\d{6,7}$")
_MAX_INPUT: Final = 40


class PhoneKind(StrEnum):
    MOBILE = "mobile"
    LANDLINE = "landline"


class PhoneError(RegistryError):
    """A string that is not a Chinese mobile or landline number."""


@dataclass(frozen=True, slots=True)
class Phone:
    """A normalised number: ``national`` is what the registry stores and indexes."""

    national: str
    kind: PhoneKind
    area_code: str | None  # without the trunk 0; None for mobiles

    @property
    def e164(self) -> str:
        return "+86" + (self.national[1:] if self.kind is PhoneKind.LANDLINE else self.national)


def _area_length(digits: str) -> int:
    return 2 if digits[0] in "12" else 3


def normalise_phone(raw: str, *, default_area_code: str | None = None) -> Phone:
    """The national form of ``raw``.

    Args:
        raw: The number as typed or as delivered by the exchange.
        default_area_code: Area code (with or without its 0) for a bare local number.

    Raises:
        PhoneError: the message names the value and what was expected.
    """
    if len(raw) > _MAX_INPUT:
        raise PhoneError(
            f"Phone {raw[:_MAX_INPUT]!r}... is too long. Expected at most {_MAX_INPUT} characters."
        )
    # NFKC turns full-width digits and brackets (typed with a Chinese IME) into ASCII ones.
    text = _SEPARATORS.sub("", unicodedata.normalize("NFKC", raw).strip())
    international = False
    if text.startswith("+"):
        if not text.startswith("+86"):
            raise PhoneError(
                f"Phone {raw!r} is not a Chinese number. Expected +86 or no country code."
            )
        text, international = text[3:], True
    elif text.startswith("0086"):
        text, international = text[4:], True
    if not text:
        raise PhoneError(
            f"Phone {raw!r} is empty. Expected a mobile or a landline with its area code."
        )
    if not text.isascii() or not text.isdigit():
        raise PhoneError(
            f"Phone {raw!r} has characters other than digits, spaces, dashes, parentheses or a leading +."
        )
    if not international and len(text) == 13 and text.startswith("86") and _MOBILE.match(text[2:]):
        text = text[2:]  # 86 without its +, as some exchanges deliver it
    if _MOBILE.match(text):
        return Phone(text, PhoneKind.MOBILE, None)
    if text.startswith("0") and _MOBILE.match(text[1:]):
        return Phone(text[1:], PhoneKind.MOBILE, None)  # long-distance 0 before a mobile
    if international and text.startswith("0"):
        # "+86 010 ..." is a common mistake; the trunk 0 does not belong after the country code.
        text = text[1:]
    if text.startswith("0"):
        text = text[1:]
    elif not international and _LOCAL.match(text):
        if default_area_code is None:
            raise PhoneError(
                f"Phone {raw!r} has no area code. Expected a mobile (1xxxxxxxxxx) or a landline "
                "with its area code, e.g. 010-61234567."
            )
        area = default_area_code.lstrip("0")
        if not area.isdigit() or len(area) != _area_length(area):
            raise PhoneError(f"Default area code {default_area_code!r} is not a valid area code.")
        text = area + text
    if not text or text[0] == "0":
        raise PhoneError(
            f"Phone {raw!r} is not valid. Expected a mobile (1xxxxxxxxxx) or an area code and local number."
        )
    n = _area_length(text)
    area, local = text[:n], text[n:]
    if not _LOCAL.match(local) or (area[0] == "1" and area != "10"):
        raise PhoneError(
            f"Phone {raw!r} is not valid. Expected a mobile (11 digits starting 13-19) or a landline: "
            "area code (10, 2x or 3 digits) and a local number of 7 or 8 digits."
        )
    return Phone("0" + area + local, PhoneKind.LANDLINE, area)


def try_normalise(raw: str) -> Phone | None:
    """:func:`normalise_phone`, or None when ``raw`` is not a number."""
    try:
        return normalise_phone(raw)
    except PhoneError:
        return None
