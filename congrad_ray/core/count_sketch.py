"""Count sketch ``S: R^d -> R^k`` (docs/design.md §2), seeded by (seed, parameter name, coordinate).

Every parameter is hashed on its 2-D view ``(R, C)`` (a ``d_out x d_in`` weight as it is, a 1-D tensor as
``(1, d)``, a flat vector as rows of ``k``) with the composite (TensorSketch) hash

    h(r, c) = (h_out(r) + h_in(c)) mod k,     s(r, c) = s_out(r) * s_in(c),

so hash state is ``O(R + C)`` per parameter and every actor on every node rebuilds the same ``S`` from the seed
alone. Weights of layers that read the same input tensor (a block's q/k/v projections, gate/up) share one input hash
``h_in, s_in`` (:meth:`CountSketch.share_input`): ``S`` of each is then a block of the TensorSketch of the layers'
stacked matrix, equally accurate, and the FFT route transforms their input once and their summed output sketches
once. ``S`` is linear, so ``<S(u), S(v)>`` estimates ``<u, v>`` without bias and sketches of sums are sums of
sketches (per-language aggregates merge exactly).

Signs are folded into the bucket index: a coordinate with sign -1 goes to bucket ``k + h``, and the sketch is
``acc[:, :k] - acc[:, k:]``. This turns the sketch into a single ``index_add_`` (no multiply pass over ``v``). With
``k`` a power of two the composite signed index of ``(r, c)`` is two integer ops on the two signed indices:
``((so + si) & (k - 1)) | ((so ^ si) & k)``.

Per-sample linear-layer gradients are sketched by :meth:`CountSketch.sketch_outer` on one of two exact routes: the
TensorSketch (FFT) identity for wide layers, or blockwise per-sample GEMMs plus the composite index for narrow
ones (where ``d_out d_in`` is not far above ``k log k``), chosen by a cost model.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

# Elements per index chunk in the explicit composite sketch; bounds the transient index to 2 MiB
# (building it in cache-sized pieces is several times faster per element than in one big pass).
_INDEX_CHUNK = 1 << 18
# Cost model of :meth:`CountSketch.sketch_outer`, in GEMM multiply-adds: one unit of ``k log2 k`` work per token on
# the FFT route (two real FFTs in cache and a complex product), one input element count-sketched on that route, and
# one element of a materialised per-sample block scattered on the explicit route. Measured on CPU (AVX2, MKL, fp32,
# one thread: ``python -m benchmarks --only routes`` times both routes per shape and reports the model's regret);
# both routes are exact, so the model only picks the faster one.
_MACS_PER_FFT_UNIT = 12.0
_MACS_PER_SKETCHED_INPUT = 45.0
_MACS_PER_SCATTERED_ENTRY = 40.0
# Which definition of ``S`` a stored sketch was made by, for the same seed and names (part of a run's sketch
# fingerprint, so that a resumed or grown run never mixes two): 2 shares input hashes between layers (§2).
SKETCH_DEFINITION = 2
# Token rows per chunk on the FFT route on CPU: small reused buffers instead of a layer's worth (16 MB at 1,024 rows).
_FFT_CHUNK_ROWS = 128


def stream_seed(seed: int, name: str, axis: str) -> int:
    """A 63-bit seed for one hash stream, stable across processes, machines and Python versions."""
    digest = hashlib.blake2b(f"{seed}\x1f{name}\x1f{axis}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class AxisHash:
    """Hash of one axis of length ``n``: ``signed_index[j] = h(j) + k * [s(j) = -1]`` in ``[0, 2k)``, shape ``[n]``."""

    signed_index: Tensor
    k: int

    @cached_property
    def bucket(self) -> Tensor:
        return self.signed_index % self.k

    @cached_property
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

    def __init__(self, k: int, seed: int, route: str = "auto"):
        if k < 2 or k & (k - 1):
            raise ValueError(f"sketch width k={k} must be a power of two >= 2 (e.g. 1024, 4096, 8192)")
        if route not in ("auto", "fft", "explicit"):
            raise ValueError(f"unknown route {route!r}: use 'auto', 'fft' or 'explicit'")
        self.k = k
        self.seed = seed
        self.route = route
        self._tables: dict[tuple[str, str, int, int, str], tuple[AxisHash, AxisHash]] = {}
        self._input_names: dict[str, str] = {}

    def share_input(self, names: list[str]) -> str:
        """Declare that the weights ``names`` (``"<module>.weight"``) read the same input: their input axis is hashed
        by one stream, named after the smallest name (docs/design.md §2). Returns that name.

        The fast and the slow per-sample paths declare what they see in a forward (layers called on one tensor);
        a weight declared with different partners in two forwards would have no single ``S`` and is refused.
        """
        shared = min(names)
        for name in names:
            if self._input_names.setdefault(name, shared) != shared:
                raise ValueError(
                    f"{name} reads the same input as {shared} in one forward and as {self._input_names[name]} in "
                    "another: the layers reading each input must be the same in every forward (a model with "
                    "data-dependent wiring needs a scope without those layers)"
                )
        return shared

    def input_name(self, name: str) -> str:
        """The stream the input axis of parameter ``name`` is hashed by: its own name unless it shares its input."""
        return self._input_names.get(name, name)

    def tables(self, name: str, rows: int, cols: int, device: torch.device | str = "cpu") -> tuple[AxisHash, AxisHash]:
        """``(h_out, h_in)`` for the parameter ``name`` viewed as ``rows x cols``."""
        in_name = self.input_name(name)
        key = (name, in_name, rows, cols, str(device))
        if key not in self._tables:
            out = axis_hash(self.seed, name, "out", rows, self.k)
            inp = axis_hash(self.seed, in_name, "in", cols, self.k)
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
        acc = g.new_zeros(batch, 2 * self.k)
        self._add_rows(acc, g, h_out.signed_index, h_in.signed_index)
        return fold_signs(acc, self.k)

    def _composite_index(self, out_index: Tensor, in_index: Tensor) -> Tensor:
        """Signed composite index ``[R, C]`` of ``h(r, c)``, ``s(r, c)`` from the axes' signed indices ``[R]``, ``[C]``."""
        index = torch.add(out_index[:, None], in_index[None, :])
        index.bitwise_and_(self.k - 1)
        return index.bitwise_or_(torch.bitwise_xor(out_index[:, None], in_index[None, :]).bitwise_and_(self.k))

    def _add_rows(self, acc: Tensor, g: Tensor, out_index: Tensor, in_index: Tensor) -> None:
        """``acc [B, 2k] +=`` the signed-bucket sums of ``g [B, R, C]`` (row ``r`` hashed by ``out_index[r]``)."""
        batch, rows, cols = g.shape
        step = max(1, _INDEX_CHUNK // max(cols, 1))
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            index = self._composite_index(out_index[r0:r1], in_index).view(-1)
            acc.index_add_(1, index, g[:, r0:r1].reshape(batch, -1))

    def sketch_param(self, name: str, g: Tensor) -> Tensor:
        """Sketch a batch of gradients of one parameter ``g [B, *shape] -> [B, k]`` on its 2-D view."""
        return self.sketch_matrix(name, as_matrix_batch(g))

    def sketch_flat(self, name: str, v: Tensor) -> Tensor:
        """Sketch a batch of flat vectors ``v [B, d] -> [B, k]`` viewed as rows of width ``k`` (zero-padded).

        The padding is never written: the full rows are a view of ``v`` and the last, partial row is hashed on its own.
        """
        batch, d = v.shape
        rows = -(-d // self.k)
        h_out, h_in = self.tables(name, rows, self.k, v.device)
        full = d // self.k
        acc = v.new_zeros(batch, 2 * self.k)
        if full:
            self._add_rows(acc, v[:, : full * self.k].view(batch, full, self.k), h_out.signed_index, h_in.signed_index)
        if full < rows:
            tail = v[:, full * self.k :].unsqueeze(1)
            self._add_rows(acc, tail, h_out.signed_index[full:], h_in.signed_index[: tail.shape[-1]])
        return fold_signs(acc, self.k)

    def sketch_outer(
        self, name: str, delta: Tensor, x: Tensor, chunk_elems: int = 1 << 24, method: str | None = None
    ) -> Tensor:
        """``S`` of per-sample sums of outer products, never forming them all at once (docs/design.md §3).

        For ``G_n = sum_t delta_{n,t} x_{n,t}^T`` (a linear layer's per-sample weight gradient, ``d_out x d_in``)::

            S(G_n) = IFFT( sum_t FFT(CS_out(delta_{n,t})) * FFT(CS_in(x_{n,t})) )

        That costs ``O(T (d_in + d_out + k log k))`` per sample. For a small layer (``d_out d_in`` not far above
        ``k log k``) forming ``G_n`` block by block with a GEMM and applying the definition of ``S`` to it is faster
        (``O(T d_out d_in)`` multiply-adds at GEMM speed, like the weight gradient of a training step); ``"auto"``
        picks the cheaper route by a cost model. Both are exact; the explicit route keeps at most ``chunk_elems``
        gradient entries and an index of ``_INDEX_CHUNK`` entries alive, so memory stays bounded either way.

        Args:
            delta: output gradients ``[N, T, d_out]``.
            x: layer inputs ``[N, T, d_in]``.
            chunk_elems: bound on the transient per-chunk buffers (FFT spectra or gradient blocks), in elements.
            method: ``"auto"``, ``"fft"`` (TensorSketch) or ``"explicit"`` (blockwise GEMM + composite index);
                ``None`` takes this sketch's ``route``.
        Returns:
            ``[N, k]``, equal to ``sketch_matrix(name, G)`` up to float rounding.
        """
        return self.sketch_outer_shared({name: delta}, x, chunk_elems, method)

    def sketch_outer_shared(
        self, deltas: dict[str, Tensor], x: Tensor, chunk_elems: int = 1 << 24, method: str | None = None
    ) -> Tensor:
        """``sum_m S(G_m)`` over layers ``m`` that read the same input ``x`` (``G_{m,n} = sum_t delta_{m,n,t}
        x_{n,t}^T``), as :meth:`sketch_outer` does for one. The weights must share their input hash
        (:meth:`share_input`), so by linearity the FFT route sketches and transforms ``x`` once and the sum of the
        layers' output sketches once: two FFTs per token for the group instead of two per layer.

        Args:
            deltas: ``{weight name: output gradients [N, T, d_out_m]}``.
            x: the layers' common input ``[N, T, d_in]``.
        Returns:
            ``[N, k]``, equal to ``sum_m sketch_matrix(m, G_m)`` up to float rounding.
        """
        method = method or self.route
        if method not in ("auto", "fft", "explicit"):
            raise ValueError(f"unknown sketch_outer method {method!r}: use 'auto', 'fft' or 'explicit'")
        if len({self.input_name(name) for name in deltas}) != 1:
            raise ValueError(f"{sorted(deltas)} do not share an input hash: declare them with share_input first")
        n, t, d_in = x.shape
        tables = {name: self.tables(name, delta.shape[-1], d_in, delta.device) for name, delta in deltas.items()}
        h_in = next(iter(tables.values()))[1]
        outs = [(delta, tables[name][0]) for name, delta in deltas.items()]
        if method == "auto":
            method = self.outer_method(t, sum(delta.shape[-1] for delta, _ in outs), d_in)
        if method == "explicit":
            acc = x.new_zeros(n, 2 * self.k)
            for delta, h_out in outs:
                self._outer_explicit_into(acc, delta, x, h_out, h_in, chunk_elems)
            return fold_signs(acc, self.k)
        return self._outer_fft(outs, x, h_in, chunk_elems)

    def outer_method(self, t: int, d_out: int, d_in: int) -> str:
        """The route ``sketch_outer(method="auto")`` takes for ``T = t`` tokens per sample and a ``d_out x d_in``
        layer (layers sharing an input: ``d_out`` their summed output widths): ``"explicit"`` or ``"fft"``,
        whichever the cost model (per sample, in GEMM multiply-adds) says is cheaper."""
        explicit = d_out * d_in * (t + _MACS_PER_SCATTERED_ENTRY)
        fft = t * (self.k * math.log2(self.k) * _MACS_PER_FFT_UNIT + (d_out + d_in) * _MACS_PER_SKETCHED_INPUT)
        return "explicit" if explicit < fft else "fft"

    def _outer_fft(self, outs: list[tuple[Tensor, AxisHash]], x: Tensor, h_in: AxisHash, chunk_elems: int) -> Tensor:
        """The TensorSketch route, on CPU ``_FFT_CHUNK_ROWS`` token rows at a time (whole samples, or one sample's
        tokens in pieces; ``chunk_elems / k`` rows elsewhere); the two ``[rows, k]`` token sketches and their spectra
        are allocated once per call and reused (a layer's worth allocated, zeroed and faulted in afresh made the FFTs
        half as fast), and the token sum is taken in the frequency domain: one inverse FFT per sample. ``outs`` are
        the ``(delta [N, T, d_out_m], h_out_m)`` of the layers reading ``x``: their output sketches add up in one
        buffer before its transform."""
        n, t, d_in = x.shape
        if n == 0 or t == 0:
            return x.new_zeros(n, self.k)
        rows = max(1, chunk_elems // self.k)
        if x.device.type == "cpu":  # on an accelerator, fewer and larger transforms are faster
            rows = min(rows, _FFT_CHUNK_ROWS)
        tokens = min(t, rows)  # tokens of one sample per chunk
        samples = max(1, rows // t)  # whole samples per chunk (1 when a sample's tokens are split)
        a, b = x.new_empty(samples * tokens, self.k), x.new_empty(samples * tokens, self.k)
        complex_dtype = torch.complex128 if x.dtype == torch.float64 else torch.complex64
        a_hat = torch.empty(samples * tokens, self.k // 2 + 1, dtype=complex_dtype, device=x.device)
        b_hat = torch.empty_like(a_hat)
        spectrum = torch.zeros(n, self.k // 2 + 1, dtype=complex_dtype, device=x.device)
        for s0 in range(0, n, samples):
            m = min(samples, n - s0)
            for t0 in range(0, t, tokens):
                span = min(tokens, t - t0)
                r = m * span
                a[:r].zero_()
                for delta, h_out in outs:
                    self._sketch_rows_add(a[:r], delta[s0 : s0 + m, t0 : t0 + span].reshape(r, -1), h_out)
                self._sketch_rows_add(b[:r].zero_(), x[s0 : s0 + m, t0 : t0 + span].reshape(r, d_in), h_in)
                torch.fft.rfft(a[:r], out=a_hat[:r])
                torch.fft.rfft(b[:r], out=b_hat[:r])
                spectrum[s0 : s0 + m] += a_hat[:r].mul_(b_hat[:r]).view(m, span, -1).sum(dim=1)
        return torch.fft.irfft(spectrum, n=self.k)

    def _sketch_rows_add(self, out: Tensor, v: Tensor, h: AxisHash) -> None:
        """``out [M, k] += CS(v [M, n])`` in place; signs are applied to ``v`` when ``n < 2k`` (cheaper than
        zeroing and folding ``2k`` buckets per row)."""
        if v.shape[1] >= 2 * self.k:
            out.add_(self.sketch_axis(v, h))
            return
        out.index_add_(1, h.bucket, v * h.sign.to(v.dtype))

    def _outer_explicit_into(
        self, acc: Tensor, delta: Tensor, x: Tensor, h_out: AxisHash, h_in: AxisHash, chunk_elems: int
    ) -> None:
        """``acc [N, 2k] +=`` the signed-bucket sums of the blocks of ``G_n``, formed by GEMMs a bounded block at a
        time."""
        n, t, d_out = delta.shape
        d_in = x.shape[-1]
        rows_per_block = max(1, min(d_out, _INDEX_CHUNK // max(d_in, 1)))
        delta_t = delta.transpose(1, 2)
        for r0 in range(0, d_out, rows_per_block):
            r1 = min(d_out, r0 + rows_per_block)
            index = self._composite_index(h_out.signed_index[r0:r1], h_in.signed_index).view(-1)
            samples = max(1, chunk_elems // ((r1 - r0) * d_in))
            for s0 in range(0, n, samples):
                s1 = min(n, s0 + samples)
                block = torch.bmm(delta_t[s0:s1, r0:r1], x[s0:s1])
                acc[s0:s1].index_add_(1, index, block.view(s1 - s0, -1))

    def sketch_bias(self, name: str, delta_sum: Tensor) -> Tensor:
        """Sketch per-sample bias gradients ``sum_t delta_{n,t}`` (``[N, d_out]``) on the ``(1, d_out)`` view."""
        return self.sketch_matrix(name, delta_sum.unsqueeze(1))


def as_matrix_batch(g: Tensor) -> Tensor:
    """``[B, *shape] -> [B, R, C]``: 1-D params become ``(1, d)``, N-D params ``(shape[0], prod(rest))``."""
    if g.dim() == 2:
        return g.unsqueeze(1)
    return g.reshape(g.shape[0], g.shape[1], -1)
