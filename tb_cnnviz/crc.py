"""CRC-32C of event-file records, fast enough for megabytes of pictures per step.

Every TFRecord (the framing of TensorBoard's event files) carries two masked CRC-32C
checksums. Without TensorFlow, TensorBoard's writer computes them in pure Python at about
8 MB/s on these 2 cores: a MobileNetV2 step of 1.6 MB of pictures spent 0.2 s of the callbacks'
time budget on checksums alone, more than its feature maps. This module computes the same
checksum with numpy at about 100 MB/s.

How: a CRC is linear over GF(2). The data is cut into `K` chunks of `L` bytes, and the
register of every chunk (started from 0) is advanced one byte at a time for all chunks at
once, a numpy table lookup over `K` values per byte position. The chunks' registers are then
joined left to right: the register after chunk `i` is the one before it advanced over `L`
zero bytes, which is a fixed linear map of 32 bits (four 256-entry tables), XOR chunk `i`'s
own register.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["crc32c", "masked_crc32c"]

_POLY = 0x82F63B78  # Castagnoli, bit-reversed
_MASK_DELTA = 0xA282EAD8
_SMALL = 4096  # below this many bytes the plain table loop is as fast


def _byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1)
    return table.astype(np.uint32)


_TABLE = _byte_table()
_TABLE_LIST = [int(v) for v in _TABLE]


def _advance(registers: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Advances register `k` over the bytes `rows[:, k]` (`[L, K]`), all `K` at once."""
    for row in rows.astype(np.uint32):  # one contiguous row of K bytes per position
        registers = _TABLE[(registers ^ row) & 0xFF] ^ (registers >> 8)
    return registers


@functools.lru_cache(maxsize=8)
def _zeros_tables(length: int) -> tuple[list[int], ...]:
    """Four tables: byte `b` of a register, advanced over `length` zero bytes, by `b`."""
    basis = np.uint32(1) << np.arange(32, dtype=np.uint32)
    moved = _advance(basis, np.zeros((length, 32), np.uint8))  # the image of each bit
    tables = []
    for byte in range(4):
        values = np.arange(256, dtype=np.uint32)
        out = np.zeros(256, np.uint32)
        for bit in range(8):
            out ^= np.where((values >> bit) & 1, moved[8 * byte + bit], np.uint32(0))
        tables.append([int(v) for v in out])
    return tuple(tables)


def _loop(register: int, data) -> int:
    table = _TABLE_LIST
    for b in data:
        register = table[(register ^ b) & 0xFF] ^ (register >> 8)
    return register


def crc32c(data: bytes) -> int:
    """The CRC-32C (Castagnoli) checksum of `data`.

    Example:
        >>> hex(crc32c(b"123456789"))
        '0xe3069283'
    """
    data = bytes(data)
    n = len(data)
    register = 0xFFFFFFFF
    if n < _SMALL:
        return _loop(register, data) ^ 0xFFFFFFFF
    # Numpy's loop runs `length` times, Python's joining loop `n / length` times: about
    # the square root of `n` each (a power of two, so few tables are ever built).
    length = 1 << min(max(int(n).bit_length() // 2, 7), 12)
    chunks = n // length
    body = np.frombuffer(data, np.uint8, count=chunks * length).reshape(chunks, length).T
    starts = np.zeros(chunks, np.uint32)
    starts[0] = register
    registers = [int(v) for v in _advance(starts, body)]
    t0, t1, t2, t3 = _zeros_tables(length)
    register = registers[0]
    for own in registers[1:]:
        register = (
            t0[register & 0xFF]
            ^ t1[(register >> 8) & 0xFF]
            ^ t2[(register >> 16) & 0xFF]
            ^ t3[register >> 24]
            ^ own
        )
    return _loop(register, data[chunks * length :]) ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C a TFRecord stores (rotated and offset, as TensorFlow masks it).

    Example:
        >>> masked_crc32c(b"")
        2726488792
    """
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF
