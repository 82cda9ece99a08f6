"""gensort / valsort against the known answers of docs/gensort.md, and their argument checks."""

import numpy as np
import pytest

from bas.sort import _reference as ref
from bas.sort.gensort import RECORD_SIZE, generate, generate_into
from bas.sort.valsort import PartialRecordError, Summary, checksum, validate

ASCII_RECORD_0 = (b"AsfAGHM5om  00000000000000000000000000000000  "
                  b"0000222200002222000022220000222200002222000000001111\r\n")


def _records(data) -> list[bytes]:
    raw = bytes(data)
    return [raw[i:i + RECORD_SIZE] for i in range(0, len(raw), RECORD_SIZE)]


def _checksum_in_chunks(n: int, ascii: bool, chunk: int = 125_000) -> int:
    """The checksum of records [0, n), made chunk records at a time on two threads."""
    buf = np.empty(chunk * RECORD_SIZE, dtype=np.uint8)
    return sum(generate_into(buf, first, ascii=ascii, threads=2, checksum=True)
               for first in range(0, n, chunk))


def test_binary_record_0_key_is_jim_gray_rip():
    assert generate(1)[:10].tobytes() == b"JimGrayRIP"


def test_binary_record_2000_key():
    assert generate(1, start=2000)[:10].tobytes().hex() == "5c71db9cae17c15fe6d3"


def test_ascii_record_0():
    assert generate(1, ascii=True).tobytes() == ASCII_RECORD_0


@pytest.mark.parametrize("ascii, want", [(False, 0x1EA6370B955), (True, 0x1F5DFB3631A)])
def test_checksum_of_1000_records(ascii, want):
    data = generate(1000, ascii=ascii)
    assert checksum(data) == want
    assert generate_into(np.empty_like(data), ascii=ascii, checksum=True) == want


@pytest.mark.parametrize("ascii, want", [(False, 0x7A0E0D4868CD4), (True, 0x7A19CFF467438)])
def test_checksum_of_1000000_records(ascii, want):
    assert _checksum_in_chunks(1_000_000, ascii) == want


@pytest.mark.parametrize("ascii, want", [(False, 0x1EA6370B955), (True, 0x1F5DFB3631A)])
def test_reference_checksum_of_1000_records(ascii, want):
    assert ref.validate(ref.generate(1000, ascii=ascii))["checksum"] == want


def test_chunks_join_up():
    whole = generate(2000)
    assert np.array_equal(np.concatenate([generate(1000), generate(1000, start=1000)]), whole)


@pytest.mark.parametrize("ascii", [False, True])
@pytest.mark.parametrize("skew", [False, True])
def test_threads_do_not_change_records(ascii, skew):
    one = generate(5003, start=77, ascii=ascii, skew=skew, threads=1)
    four = generate(5003, start=77, ascii=ascii, skew=skew, threads=4)
    assert np.array_equal(one, four)


def test_ascii_records_are_printable_lines():
    for rec in _records(generate(300, start=2**70, ascii=True, skew=True)):
        assert rec.endswith(b"\r\n") and all(32 <= b < 127 for b in rec[:98])


def _sorted_records(n: int) -> np.ndarray:
    recs = generate(n).reshape(n, RECORD_SIZE)
    order = sorted(range(n), key=lambda i: recs[i, :10].tobytes())
    return np.ascontiguousarray(recs[order]).reshape(-1)


@pytest.mark.parametrize("threads", [1, 3])
def test_sorted_records_validate(threads):
    data = _sorted_records(500)
    s = validate(data, threads)
    assert (s.records, s.unordered, s.duplicates, s.first_unordered) == (500, 0, 0, None)
    assert s.ok and s.checksum == checksum(generate(500))
    assert s.first_record == data[:100].tobytes() and s.last_record == data[-100:].tobytes()


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_unordered_record_found_at_its_index(threads):
    recs = _sorted_records(400).reshape(400, RECORD_SIZE)
    recs[[250, 251]] = recs[[251, 250]]
    s = validate(recs, threads)
    assert (s.unordered, s.first_unordered) == (1, 251)
    assert "First unordered record is record 251" in s.report()
    assert s.report().endswith("ERROR - there are 1 unordered records")


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_duplicate_keys_counted(threads):
    recs = _sorted_records(400).reshape(400, RECORD_SIZE)
    recs[101, :10] = recs[100, :10]
    recs[200:204, :10] = recs[199, :10]
    s = validate(recs, threads)
    assert (s.duplicates, s.unordered) == (5, 0)


def test_trailing_partial_record_rejected(tmp_path):
    data = generate(10).tobytes() + b"x" * 37
    with pytest.raises(PartialRecordError, match="37 bytes"):
        validate(data)
    path = tmp_path / "partial.dat"
    path.write_bytes(data)
    with pytest.raises(PartialRecordError, match="partial record"):
        validate(path)


def test_file_validates_in_chunks_like_a_buffer(tmp_path):
    data = generate(1234, start=5, skew=True)
    path = tmp_path / "recs.dat"
    path.write_bytes(data.tobytes())
    assert validate(path, threads=2, chunk_bytes=7 * RECORD_SIZE + 3) == validate(data)


def test_empty_input():
    assert validate(b"") == Summary.empty()
    assert generate(0).size == 0


def test_summary_bytes_round_trip():
    s = validate(generate(50, start=3))
    assert Summary.from_bytes(s.to_bytes()) == s
    with pytest.raises(ValueError):
        Summary.from_bytes(s.to_bytes()[:-1])


@pytest.mark.parametrize("bad", [
    lambda: generate(-1),
    lambda: generate(1, start=-1),
    lambda: generate(2, start=2**128 - 1),
    lambda: generate(1, threads=0),
    lambda: generate_into(np.empty(150, dtype=np.uint8)),
    lambda: generate_into(b"\0" * 100),
    lambda: validate(np.empty(150, dtype=np.uint8)),
])
def test_misuse_raises(bad):
    with pytest.raises((ValueError, TypeError, BufferError)):
        bad()


def test_last_record_number_allowed():
    rec = generate(1, start=2**128 - 1, ascii=True).tobytes()
    assert rec[12:44] == b"F" * 32
    assert rec == ref.generate(1, 2**128 - 1, ascii=True)
