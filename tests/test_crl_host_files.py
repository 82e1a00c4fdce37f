"""The worker host's two files beside every CRL: the high-water mark and what the CRL lists.

Both are rewritten after each publication, every hour. Rewritten in place, they cost no
new file and no rename (issue 24 §4: a re-publication of 1,000 entries is mostly such
fixed costs), and a reader never meets half a write. Real files, real processes.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from mycert.crl_mark import CrlMarkError, raise_mark, read_mark
from mycert.crl_state import read_state, write_state

KEY = "ab" * 20
OTHER_KEY = "cd" * 20


def _mark_file() -> Path:
    return Path(settings.MYCERT_CRL_HIGH_WATER_FILE)


def test_raising_the_mark_rewrites_it_in_place_in_whole_sectors() -> None:
    raise_mark(KEY, 1)
    raise_mark(OTHER_KEY, 7)
    inode = _mark_file().stat().st_ino

    raise_mark(KEY, 2)

    assert _mark_file().stat().st_ino == inode
    assert _mark_file().stat().st_size % 512 == 0
    assert json.loads(_mark_file().read_text()) == {KEY: 2, OTHER_KEY: 7}
    assert read_mark(KEY) == 2
    assert read_mark(OTHER_KEY) == 7
    assert _mark_file().stat().st_mode & 0o077 == 0
    assert sorted(path.name for path in _mark_file().parent.iterdir()) == [
        "crl-high-water.json",
        "crl-high-water.json.lock",
    ]


def test_a_mark_never_goes_down() -> None:
    raise_mark(KEY, 5)
    raise_mark(KEY, 4)
    assert read_mark(KEY) == 5


def test_a_mark_written_by_an_earlier_version_is_read_and_raised() -> None:
    """Earlier versions wrote the JSON without padding: read as it is, then written anew
    in whole sectors, and in place from then on."""
    _mark_file().parent.mkdir(parents=True, exist_ok=True)
    _mark_file().write_text(json.dumps({KEY: 3}))
    _mark_file().chmod(0o600)
    assert read_mark(KEY) == 3

    raise_mark(KEY, 4)
    inode = _mark_file().stat().st_ino
    raise_mark(KEY, 5)

    assert read_mark(KEY) == 5
    assert _mark_file().stat().st_size == 512
    assert _mark_file().stat().st_ino == inode


def test_a_mark_outgrowing_its_sector_is_written_anew_whole() -> None:
    for index in range(12):  # 12 issuing CA keys: more than 512 bytes of JSON
        raise_mark(f"{index:02x}" * 32, index + 1)

    assert _mark_file().stat().st_size == 1024
    assert all(read_mark(f"{index:02x}" * 32) == index + 1 for index in range(12))


def test_a_torn_mark_stops_publication_rather_than_reading_low() -> None:
    raise_mark(KEY, 1234)
    content = bytearray(_mark_file().read_bytes())
    content[5:9] = b"\x00\x00\x00\x00"  # a sector half written
    _mark_file().write_bytes(bytes(content))

    with pytest.raises(CrlMarkError, match="cannot be read"):
        read_mark(KEY)
    with pytest.raises(CrlMarkError, match="cannot be read"):
        raise_mark(KEY, 1235)


def _raise_from_one_to(last: int, mark_file: str) -> None:
    settings.MYCERT_CRL_HIGH_WATER_FILE = mark_file
    for number in range(1, last + 1):
        raise_mark(KEY, number)


def test_a_reader_never_meets_half_a_rewrite() -> None:
    """Another worker process raises the mark as fast as it can while this one reads it:
    every read is a mark that was written (no error, never lower than the one before)."""
    raise_mark(KEY, 1)
    writer = multiprocessing.get_context("fork").Process(
        target=_raise_from_one_to, args=(3000, str(_mark_file()))
    )
    writer.start()
    seen: list[int] = []
    while writer.is_alive():
        value = read_mark(KEY)
        assert value is not None
        seen.append(value)
    writer.join()
    assert writer.exitcode == 0
    assert seen == sorted(seen)
    assert read_mark(KEY) == 3000
    assert len(seen) > 10


def _state_file() -> Path:
    (path,) = _mark_file().parent.glob("crl-state-*")
    return path


def test_the_record_of_the_latest_crl_is_rewritten_in_place() -> None:
    first, second = os.urandom(40_000), os.urandom(30_000)
    first_digest, second_digest = hashlib.sha256(first).digest(), hashlib.sha256(second).digest()
    write_state(KEY, first, first_digest, {"number": 1})
    inode = _state_file().stat().st_ino

    write_state(KEY, second, second_digest, {"number": 2})

    assert _state_file().stat().st_ino == inode
    assert read_state(KEY, second_digest) == (second, {"number": 2})
    assert read_state(KEY, first_digest) is None
    assert [path.name for path in _mark_file().parent.iterdir()] == [_state_file().name]


def _write_states(count: int, mark_file: str) -> None:
    settings.MYCERT_CRL_HIGH_WATER_FILE = mark_file
    for number in range(count):
        der = bytes([number % 256]) * (20_000 + 7 * number)
        write_state(KEY, der, hashlib.sha256(der).digest(), {"number": number})


def test_a_record_being_rewritten_is_never_read_damaged(caplog: Any) -> None:
    """A reader waits for the writer: no record read while half written (which would be
    taken as damaged, and the stored CRL verified again for nothing)."""
    _write_states(1, str(_mark_file()))
    writer = multiprocessing.get_context("fork").Process(
        target=_write_states, args=(400, str(_mark_file()))
    )
    writer.start()
    reads = 0
    while writer.is_alive():
        der = bytes([0]) * 20_000
        read_state(KEY, hashlib.sha256(der).digest())
        reads += 1
    writer.join()
    assert writer.exitcode == 0
    assert reads > 10
    assert "damaged" not in caplog.text
    assert "cannot be read" not in caplog.text
