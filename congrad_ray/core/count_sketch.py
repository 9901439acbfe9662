"""Count sketch ``S: R^d -> R^k`` (DESIGN.md, step 2), seeded by (seed, parameter name, coordinate).

Every parameter is hashed on its 2-D view ``(R, C)`` (a ``d_out x d_in`` weight as it is, a 1-D tensor as
``(1, d)``, a flat vector as rows of ``k``) with the composite (TensorSketch) hash

    h(r, c) = (h_out(r) + h_in(c)) mod k,     s(r, c) = s_out(r) * s_in(c),

so hash state is ``O(R + C)`` per parameter and every actor on every node rebuilds the same ``S`` from the seed
alone. ``S`` is linear, so ``<S(u), S(v)>`` estimates ``<u, v>`` without bias and sketches of sums are sums of
sketches (per-language aggregates merge exactly).

Signs are folded into the bucket index: a coordinate with sign -1 goes to bucket ``k + h``, and the sketch is
``acc[:, :k] - acc[:, k:]``. This turns the sketch into a single ``index_add_`` (no multiply pass over ``v``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

# Elements per index chunk in the explicit composite sketch; bounds the transient index to 8 MiB.
_INDEX_CHUNK = 1 << 20


def stream_seed(seed: int, name: str, axis: str) -> int:
    """A 63-bit seed for one hash stream, stable across processes, machines and Python versions."""
    digest = hashlib.blake2b(f"{seed}\x1f{name}\x1f{axis}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class AxisHash:
    """Hash of one axis of length ``n``: ``signed_index[j] = h(j) + k * [s(j) = -1]`` in ``[0, 2k)``, shape ``[n]``."""

    signed_index: Tensor
    k: int

    @property
    def bucket(self) -> Tensor:
        return self.signed_index % self.k

    @property
    def sign(self) -> Tensor:
        return 1.0 - 2.0 * (self.signed_index >= self.k).to(torch.float32)


def axis_hash(seed: int, name: str, axis: str, n: int, k: int) -> AxisHash:
    """Draw ``h: [n] -> [k]`` and ``s: [n] -> {+1, -1}`` from a CPU generator seeded by (seed, name, axis)."""
    gen = torch.Generator(device="cpu").manual_seed(stream_seed(seed, name, axis))
    bucket = torch.randint(0, k, (n,), generator=gen, dtype=torch.int64)
    negative = torch.randint(0, 2, (n,), generator=gen, dtype=torch.int64)
    return AxisHash(bucket + k * negative, k)


def fold_signs(acc: Tensor, k: int) -> Tensor:
    """``[..., 2k] -> [..., k]``: positive buckets minus negative buckets."""
    return acc[..., :k] - acc[..., k:]


class CountSketch:
    """The seeded linear map ``S``. Hash tables are built lazily per parameter name and cached per device.

    Args:
        k: sketch width, a power of two (the FFT path and the ``& (k - 1)`` bucket arithmetic rely on it).
        seed: the sketch seed; with the parameter names it fully determines ``S``.
    """

    def __init__(self, k: int, seed: int):
        if k < 2 or k & (k - 1):
            raise ValueError(f"sketch width k={k} must be a power of two >= 2 (e.g. 1024, 4096, 8192)")
        self.k = k
        self.seed = seed
        self._tables: dict[tuple[str, int, int, str], tuple[AxisHash, AxisHash]] = {}

    def tables(self, name: str, rows: int, cols: int, device: torch.device | str = "cpu") -> tuple[AxisHash, AxisHash]:
        """``(h_out, h_in)`` for the parameter ``name`` viewed as ``rows x cols``."""
        key = (name, rows, cols, str(device))
        if key not in self._tables:
            out = axis_hash(self.seed, name, "out", rows, self.k)
            inp = axis_hash(self.seed, name, "in", cols, self.k)
            self._tables[key] = (
                AxisHash(out.signed_index.to(device), self.k),
                AxisHash(inp.signed_index.to(device), self.k),
            )
        return self._tables[key]

    def sketch_axis(self, v: Tensor, h: AxisHash) -> Tensor:
        """One-axis count sketch ``CS(v)`` along the last dim: ``[M, n] -> [M, k]``."""
        acc = v.new_zeros(v.shape[0], 2 * self.k)
        acc.index_add_(1, h.signed_index, v)
        return fold_signs(acc, self.k)

    def sketch_matrix(self, name: str, g: Tensor) -> Tensor:
        """Explicit composite count sketch of a batch of matrices: ``g [B, R, C] -> [B, k]``.

        This is the definition of ``S`` on one parameter, written out; the slow twin and the flat-vector path use it.
        The composite index is built in row chunks, so no ``R x C`` table is kept.
        """
        batch, rows, cols = g.shape
        h_out, h_in = self.tables(name, rows, cols, g.device)
        mask = self.k - 1
        out_b, out_neg = h_out.signed_index & mask, h_out.signed_index >= self.k
        in_b, in_neg = h_in.signed_index & mask, h_in.signed_index >= self.k
        acc = g.new_zeros(batch, 2 * self.k)
        step = max(1, _INDEX_CHUNK // max(cols, 1))
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            bucket = (out_b[r0:r1, None] + in_b[None, :]) & mask
            negative = out_neg[r0:r1, None] ^ in_neg[None, :]
            index = (bucket + self.k * negative).reshape(-1)
            acc.index_add_(1, index, g[:, r0:r1].reshape(batch, -1))
        return fold_signs(acc, self.k)

    def sketch_param(self, name: str, g: Tensor) -> Tensor:
        """Sketch a batch of gradients of one parameter ``g [B, *shape] -> [B, k]`` on its 2-D view."""
        return self.sketch_matrix(name, as_matrix_batch(g))

    def sketch_flat(self, name: str, v: Tensor) -> Tensor:
        """Sketch a batch of flat vectors ``v [B, d] -> [B, k]`` viewed as rows of width ``k`` (zero-padded)."""
        batch, d = v.shape
        rows = -(-d // self.k)
        if rows * self.k != d:
            v = torch.nn.functional.pad(v, (0, rows * self.k - d))
        return self.sketch_matrix(name, v.view(batch, rows, self.k))

    def sketch_outer(self, name: str, delta: Tensor, x: Tensor, chunk_elems: int = 1 << 24) -> Tensor:
        """TensorSketch of per-sample sums of outer products, never forming them (DESIGN.md, step 3).

        For ``G_n = sum_t delta_{n,t} x_{n,t}^T`` (a linear layer's per-sample weight gradient, ``d_out x d_in``)::

            S(G_n) = IFFT( sum_t FFT(CS_out(delta_{n,t})) * FFT(CS_in(x_{n,t})) )

        Args:
            delta: output gradients ``[N, T, d_out]``.
            x: layer inputs ``[N, T, d_in]``.
        Returns:
            ``[N, k]``, equal to ``sketch_matrix(name, G)`` up to float rounding.
        """
        n, t, d_out = delta.shape
        h_out, h_in = self.tables(name, d_out, x.shape[-1], delta.device)
        samples_per_chunk = max(1, chunk_elems // max(t * self.k, 1))
        pieces = []
        for s0 in range(0, n, samples_per_chunk):
            d_chunk, x_chunk = delta[s0 : s0 + samples_per_chunk], x[s0 : s0 + samples_per_chunk]
            m = d_chunk.shape[0]
            a = torch.fft.rfft(self.sketch_axis(d_chunk.reshape(m * t, d_out), h_out))
            b = torch.fft.rfft(self.sketch_axis(x_chunk.reshape(m * t, -1), h_in))
            spectrum = (a * b).view(m, t, -1).sum(dim=1)
            pieces.append(torch.fft.irfft(spectrum, n=self.k))
        return torch.cat(pieces) if len(pieces) > 1 else pieces[0]

    def sketch_bias(self, name: str, delta_sum: Tensor) -> Tensor:
        """Sketch per-sample bias gradients ``sum_t delta_{n,t}`` (``[N, d_out]``) on the ``(1, d_out)`` view."""
        return self.sketch_matrix(name, delta_sum.unsqueeze(1))


def as_matrix_batch(g: Tensor) -> Tensor:
    """``[B, *shape] -> [B, R, C]``: 1-D params become ``(1, d)``, N-D params ``(shape[0], prod(rest))``."""
    if g.dim() == 2:
        return g.unsqueeze(1)
    return g.reshape(g.shape[0], g.shape[1], -1)
