"""Slow pure-Python gensort 1.5 records and valsort checks: the model the native kernels must match.

Written straight from docs/gensort.md and on purpose unlike the C: X_n comes from the closed
form of the LCG instead of skip-ahead tables, keys are big integers instead of byte strings.
Some microseconds a record: for tests only.
"""

from __future__ import annotations

import zlib

A = 0x2360ED051FC65DA44385DF649FCCF645
C = 0x4A696D47726179524950202020202001
MOD = 1 << 128
RECORD_SIZE = 100
KEY_SIZE = 10

# K_i for value group i = 1..9: the high 64 bits, then the top 16 bits of the low half
_K = [0] + [hi << 64 | top << 48 for hi, top in (
    (0xF0E8E4E2E1D8D4D2, 0xD1CC),
    (0xCAC9C6C5C3B8B4B2, 0xB1AC),
    (0xAAA9A6A5A39C9A99, 0x9695),
    (0x938E8D8B87787472, 0x716C),
    (0x6A696665635C5A59, 0x5655),
    (0x534E4D4B473C3A39, 0x3635),
    (0x332E2D2B271E1D1B, 0x170F),
    (0xC8C4C2C198949291, 0x8CE0),
    (0x170F332E2D2B271E, 0x1D1B),
)]


def lcg(n: int) -> int:
    """X_n = C (A^n - 1) / (A - 1) mod 2^128, the division done exactly modulo (A - 1) 2^128."""
    m = (A - 1) * MOD
    return C * ((pow(A, n, m) - 1) // (A - 1)) % MOD


def top10(x: int) -> bytes:
    return (x >> 48).to_bytes(KEY_SIZE, "big")


def _base95(v: int, digits: int) -> bytes:
    return bytes(32 + (v // 95 ** i) % 95 for i in range(digits))


def key(x: int, ascii: bool) -> bytes:
    """The unskewed key that random number x gives."""
    if ascii:
        return _base95(x >> 64, 8) + _base95(x % (1 << 64), 2)
    return top10(x)


def _skewed(k: bytes, r: int, lo: int, ascii: bool) -> bytes:
    s = key(lcg(r.bit_length() + 1), ascii)[:6]
    if ascii:
        n = (lo >> 32) & 7
        n = 0 if n > 6 else n
        return s[:n] + k[n:]
    n = (lo >> 32) & 63
    n = 0 if n > 48 else n
    mask = ((1 << n) - 1) << (80 - n)
    bits = (int.from_bytes(k, "big") & ~mask) | (int.from_bytes(s, "big") << 32 & mask)
    return bits.to_bytes(KEY_SIZE, "big")


def record(r: int, xs: list[int], ascii: bool = False, skew: bool = False) -> bytes:
    """Record r from xs = [X_{r+1}, ..., X_{r+10}]."""
    lo = xs[0] % (1 << 64)
    k = key(xs[0], ascii)
    if skew:
        k = _skewed(k, r, lo, ascii)
    if ascii:
        filler = "".join(f"{(lo >> s) & 15:X}" * 4 for s in range(48, -1, -4))
        return k + f"  {r:032X}  {filler}\r\n".encode()
    return k + b"".join(top10(xs[i] ^ _K[i]) for i in range(1, 10))


def generate(n: int, start: int = 0, ascii: bool = False, skew: bool = False) -> bytes:
    """Records [start, start + n)."""
    xs = [lcg(start + 1)]
    while len(xs) < 10:
        xs.append((A * xs[-1] + C) % MOD)
    out = []
    for r in range(start, start + n):
        out.append(record(r, xs, ascii, skew))
        xs = xs[1:] + [(A * xs[-1] + C) % MOD]
    return b"".join(out)


def validate(data: bytes) -> dict:
    """valsort's findings on data, in the fields of bas.sort.valsort.Summary."""
    if len(data) % RECORD_SIZE:
        raise ValueError("partial record")
    recs = [data[i:i + RECORD_SIZE] for i in range(0, len(data), RECORD_SIZE)]
    total = dup = unordered = 0
    first_unordered = None
    for i, rec in enumerate(recs):
        total += zlib.crc32(rec)
        if i == 0:
            continue
        prev, cur = recs[i - 1][:KEY_SIZE], rec[:KEY_SIZE]
        if cur == prev:
            dup += 1
        elif cur < prev:
            unordered += 1
            first_unordered = i if first_unordered is None else first_unordered
    zeros = bytes(RECORD_SIZE)
    return {
        "records": len(recs),
        "checksum": total,
        "duplicates": dup,
        "unordered": unordered,
        "first_unordered": first_unordered,
        "first_record": recs[0] if recs else zeros,
        "last_record": recs[-1] if recs else zeros,
    }
