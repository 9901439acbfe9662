"""How sketches ``S(g_i)`` are stored: one fixed-size list of ``k`` values per pair, in ``sketch.store_dtype``.

* ``float32``: exact (the sketch pass's own precision);
* ``float16``: Arrow/Parquet half floats, half the bytes; fine for sketches (values well inside float16's range:
  they are sums of hashed gradient entries of one pair, far from 65504 and mostly far from 6e-8);
* ``bfloat16``: float32's range with 8 bits of mantissa, as its 16-bit patterns (``uint16``: Arrow has no bfloat16),
  rounded to nearest even.

The element type says the encoding, so a reader needs no config. Math is always float32 or float64 after decoding;
the per-language partial sums are taken by the actor from the float32 sketches, before any rounding.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

STORE_TYPES = {"float32": pa.float32(), "float16": pa.float16(), "bfloat16": pa.uint16()}


def encode_sketches(sketches: torch.Tensor, store_dtype: str) -> pa.FixedSizeListArray:
    """``[n, k]`` float32 sketches as the store's column."""
    k = sketches.shape[1]
    if store_dtype == "float32":
        values = sketches.to(torch.float32).contiguous().numpy().reshape(-1)
    elif store_dtype == "float16":
        values = sketches.to(torch.float16).contiguous().numpy().reshape(-1)
    else:  # bfloat16: torch rounds to nearest even; its bits as uint16
        values = sketches.to(torch.bfloat16).contiguous().view(torch.int16).numpy().reshape(-1).view(np.uint16)
    return pa.FixedSizeListArray.from_arrays(pa.array(values, STORE_TYPES[store_dtype]), k)


def sketch_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A sketch column as one writable ``[n, k]`` float32 array, whatever its stored type: its values flattened by
    Arrow and reshaped, with no Python object per row."""
    flat = pc.list_flatten(column).to_numpy()
    if flat.dtype == np.uint16:  # bfloat16 bit patterns: the upper half of a float32
        flat = (flat.astype(np.uint32) << 16).view(np.float32)
    flat = flat.reshape(len(column), column.type.list_size)
    return np.require(flat, np.float32, ["C", "W"])  # a copy only where Arrow's buffer is read-only (torch writes)
