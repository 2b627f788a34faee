"""tb_cnnviz.crc: the checksums event files carry, against TensorBoard's own implementation."""

from __future__ import annotations

import numpy as np
import pytest
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference

from tb_cnnviz import crc


@pytest.mark.parametrize(
    "size", [0, 1, 7, 8, 4095, 4096, 4097, 127 * 1024 + 5, 1 << 20, (1 << 20) + 4099]
)
def test_masked_crc32c_equals_tensorboards_at_every_size(size):
    """Every size (below, at and past the chunked path's thresholds) gives TensorBoard's value."""
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert crc.masked_crc32c(data) == reference(data)


def test_crc32c_of_the_standard_check_string():
    """CRC-32C('123456789') is the catalogued 0xE3069283, so the polynomial is Castagnoli's."""
    assert crc.crc32c(b"123456789") == 0xE3069283
