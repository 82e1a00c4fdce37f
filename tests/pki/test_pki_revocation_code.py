"""mycert.pki.revocation_code: high-entropy, readable, never taken for the password."""

from __future__ import annotations

import re

import pytest

from mycert.pki import (
    REVOCATION_CODE_ENTROPY_BITS,
    canonical_revocation_code,
    generate_keystore_password,
    generate_revocation_code,
)
from mycert.pki.pkcs12 import KEYSTORE_PASSWORD_ALPHABET

CODE_SHAPE = re.compile(r"(?:[A-Za-z0-9]{5}-){4}[A-Za-z0-9]{5}")


def test_a_code_is_five_groups_of_five_without_look_alikes() -> None:
    codes = {generate_revocation_code() for _ in range(200)}
    assert len(codes) == 200
    for code in codes:
        assert CODE_SHAPE.fullmatch(code), code
        assert set(code.replace("-", "")) <= set(KEYSTORE_PASSWORD_ALPHABET)
        assert not set(code) & set("0Oo1lI")


def test_a_code_carries_more_than_128_bits() -> None:
    assert REVOCATION_CODE_ENTROPY_BITS >= 145


def test_a_code_never_looks_like_a_keystore_password() -> None:
    # Sent in the same e-mail: grouped differently, so neither is typed for the other.
    password = generate_keystore_password()
    assert canonical_revocation_code(password) is None
    assert not CODE_SHAPE.fullmatch(password)


def test_separators_and_blanks_are_forgiven() -> None:
    code = generate_revocation_code()
    for typed in (
        f" {code} ",
        code.replace("-", ""),
        code.replace("-", " "),
        code.replace("-", "\u2013"),  # a mail client's en dash
        f"{code}\n",
    ):
        assert canonical_revocation_code(typed) == code, typed


def test_case_and_length_are_not_forgiven() -> None:
    code = generate_revocation_code()
    swapped = code.swapcase()
    assert canonical_revocation_code(swapped) in (None, swapped)  # never the original
    assert canonical_revocation_code(code[:-1]) is None
    assert canonical_revocation_code(code + "A") is None
    assert canonical_revocation_code("O" + code[1:]) is None  # not in the alphabet
    assert canonical_revocation_code("") is None


def test_a_non_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="text must be a str, not bytes"):
        canonical_revocation_code(b"abc")  # type: ignore[arg-type]
