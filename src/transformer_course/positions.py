"""Position information: sinusoidal tables, rotary embeddings (RoPE) and their scaling, ALiBi slopes.

Shape vocabulary (see ``attention.py``): B, T (query positions), S (key positions), n_head,
n_kv_head, head_dim. RoPE rotates q (B, n_head, T, head_dim) and k (B, n_kv_head, S, head_dim) with
tables cos, sin of shape (T, head_dim) that broadcast over the leading dimensions.

Three ways to tell attention where a token is:
    sinusoidal  a fixed (n_pos, dim) table added to the token embeddings (Vaswani et al., 2017,
                arXiv:1706.03762).
    RoPE        rotate each pair of coordinates of q and k by the angle ``position * theta_i``, so that
                q_m · k_n depends on the positions only through m - n (Su et al., 2021, RoFormer,
                arXiv:2104.09864).
    ALiBi       no embedding at all: add ``-slope_h * distance`` to the scores of head h (Press et al.,
                2022, arXiv:2108.12409); ``alibi_slopes`` gives the slopes, ``attention.alibi_bias`` the bias.

RoPE pairs the head_dim coordinates two ways; both are the same rotation up to a permutation:
    "half"         pairs (i, i + head_dim/2), rotated with ``rotate_half`` (GPT-NeoX, Hugging Face Llama).
    "interleaved"  pairs (2i, 2i + 1), the RoFormer paper and Meta's original Llama code (complex numbers).
``interleaved_to_half`` is that permutation; it converts Meta q/k weights to Hugging Face ones.

Stretching RoPE past the training length L (``config.RopeScaling``, see ``rope_inv_freq``): "linear" position
interpolation, "ntk" and "dynamic_ntk" base scaling, "yarn" and Llama 3.1's "llama3".

Usage::

    rope = RotaryEmbedding(head_dim=64, context_length=4096)
    cos, sin = rope(torch.arange(T))                                   # (T, head_dim) each, float32
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)            # (B, n_head | n_kv_head, T, head_dim)
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from .config import ROPE_LAYOUTS, RopeScaling


# --------------------------------------------------------------------------------------------------
# Sinusoidal table
# --------------------------------------------------------------------------------------------------
def sinusoidal_table(n_pos: int, dim: int, base: float = 10000.0, *, device=None, dtype=None) -> Tensor:
    """The fixed position table of Vaswani et al. (2017, arXiv:1706.03762), (n_pos, dim).

    ``PE[pos, 2i] = sin(pos / base^(2i/dim))`` and ``PE[pos, 2i+1] = cos(pos / base^(2i/dim))``: pair i
    is a point on a circle turning at frequency ``base^(-2i/dim)``, the same frequencies RoPE uses.
    Computed in float32, returned in ``dtype`` (default float32).
    """
    if dim < 2 or dim % 2 != 0:
        raise ValueError(f"dim={dim} must be a positive even number: each frequency fills one (sin, cos) pair.")
    if n_pos < 0:
        raise ValueError(f"n_pos={n_pos} must be >= 0.")
    inv_freq = _inv_freq(dim, base, device)  # (dim // 2,)
    angles = torch.arange(n_pos, device=device, dtype=torch.float32)[:, None] * inv_freq  # (n_pos, dim // 2)
    table = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)  # (n_pos, dim): sin, cos, sin, ...
    return table.to(torch.float32 if dtype is None else dtype)


# --------------------------------------------------------------------------------------------------
# RoPE frequencies and their scaling
# --------------------------------------------------------------------------------------------------
def rope_inv_freq(
    head_dim: int,
    base: float = 10000.0,
    scaling: Optional[RopeScaling] = None,
    seq_len: Optional[int] = None,
    *,
    device=None,
) -> tuple[Tensor, float]:
    """RoPE frequencies after scaling: ``(inv_freq, attention_factor)``.

    inv_freq: (head_dim // 2,) float32, ``theta_i = base^(-2i/head_dim)`` before scaling; pair i of q and
    k turns by ``position * theta_i``. attention_factor: multiplies cos and sin, so that the q·k logits
    are multiplied by its square; 1.0 except for YaRN.

    With L = ``scaling.original_context_length`` and s = ``scaling.factor``:
        linear       ``theta_i / s``, the same as positions / s (Chen et al., 2023, arXiv:2306.15595).
        ntk          ``base' = base * s^(head_dim / (head_dim - 2))``: the highest frequency theta_0 = 1 is
                     kept and the lowest, ``base^(-(head_dim-2)/head_dim)``, is divided by exactly s.
        dynamic_ntk  ntk with a length-dependent factor (needs ``seq_len``, the current length l):
                     unscaled while l <= L, then ``base' = base * (s*l/L - (s-1))^(head_dim/(head_dim-2))``.
                     This is the formula of Hugging Face transformers (``_compute_dynamic_ntk_parameters``),
                     followed so that its checkpoints and numbers can be reproduced. It is continuous at
                     l = L and reaches factor s + 1 at l = 2L. With s = 1 it reduces to ntk with
                     factor l / L, the "Dynamic NTK" of Peng et al. (2023), which scales by max(1, l/L).
        yarn         NTK-by-parts (Peng et al., 2023, arXiv:2309.00071), see below; attention_factor =
                     ``scaling.attention_factor``, by default ``0.1 ln(s) + 1``, the paper's sqrt(1/t), so
                     the logits are divided by t.
        llama3       Llama 3.1 (Grattafiori et al., 2024, arXiv:2407.21783; Meta's ``apply_scaling``): with
                     wavelength ``lambda_i = 2 pi / theta_i``, pairs with lambda_i > L / low_freq_factor are
                     divided by s, those with lambda_i < L / high_freq_factor are kept, and in between
                     ``(1 - g) theta_i / s + g theta_i`` with ``g = (L / lambda_i - low) / (high - low)``.
                     Since L / lambda_i is the number of turns r_i over L, this is YaRN's paper ramp with
                     beta_slow = low_freq_factor, beta_fast = high_freq_factor and no attention factor.
                     Computed with the operations of transformers' ``_compute_llama3_parameters``.

    YaRN, ``ramp="paper"`` (the default). Pair i turns ``r_i = L * theta_i / (2 pi)`` times over the
    original context (L / wavelength). With the ramp ``gamma(r) = 0 if r < beta_slow, 1 if r > beta_fast,
    else (r - beta_slow) / (beta_fast - beta_slow)``, the new frequency is
    ``(1 - gamma) * theta_i / s + gamma * theta_i``: fast pairs (many turns, local information) are left
    alone, slow pairs (less than one turn, never seen past L) are interpolated like "linear". Its gamma is a
    function of r alone, which is what the book derives and what the tests check pair by pair.

    YaRN, ``ramp="hf"``: the ramp of Hugging Face transformers (``_compute_yarn_parameters``) and of the
    official YaRN code, what Hugging Face YaRN checkpoints were trained with (``ModelConfig.from_hf``
    picks it). beta_fast and beta_slow become fractional pair indices
    ``d(beta) = head_dim * ln(L / (2 pi beta)) / (2 ln base)`` (``find_correction_dim``: the pair that
    turns beta times over L), rounded outward with floor / ceil when ``scaling.truncate`` and clipped to
    [0, head_dim - 1]; gamma then falls linearly in the pair index i from 1 at d(beta_fast) to 0 at
    d(beta_slow), i.e. linearly in log r, not in r. Both ramps agree outside the ramp (up to the rounded
    boundary pairs); inside it they differ.
    """
    _check_head_dim(head_dim)
    if not base > 0:
        raise ValueError(f"base={base} must be positive (10000 in most models, 500000 in Llama 3).")
    dynamic = scaling is not None and scaling.kind == "dynamic_ntk"
    if scaling is None or (dynamic and _need_seq_len(seq_len) <= scaling.original_context_length):
        return _inv_freq(head_dim, base, device), 1.0

    s, L = float(scaling.factor), scaling.original_context_length
    if scaling.kind == "linear":
        return _inv_freq(head_dim, base, device) / s, 1.0
    if scaling.kind in ("ntk", "dynamic_ntk"):
        if head_dim < 4:
            raise ValueError(f"NTK scaling needs head_dim >= 4 (it uses head_dim / (head_dim - 2)); got {head_dim}.")
        if scaling.kind == "dynamic_ntk":
            s = s * seq_len / L - (s - 1)  # Hugging Face's length-dependent factor, > 1 since seq_len > L
        return _inv_freq(head_dim, base * s ** (head_dim / (head_dim - 2)), device), 1.0
    if scaling.kind == "llama3":
        return _llama3_inv_freq(_inv_freq(head_dim, base, device), s, L, scaling.low_freq_factor,
                                scaling.high_freq_factor), 1.0

    # yarn
    attention_factor = 0.1 * math.log(s) + 1.0 if scaling.attention_factor is None else scaling.attention_factor
    if scaling.ramp == "hf":
        return _yarn_hf_inv_freq(head_dim, base, s, L, scaling, device), attention_factor
    inv_freq = _inv_freq(head_dim, base, device)  # (head_dim // 2,)
    rotations = L * inv_freq / (2 * math.pi)  # r_i: turns of pair i over the original context
    gamma = ((rotations - scaling.beta_slow) / (scaling.beta_fast - scaling.beta_slow)).clamp(0.0, 1.0)
    inv_freq = (1 - gamma) * inv_freq / s + gamma * inv_freq
    return inv_freq, attention_factor


def _llama3_inv_freq(inv_freq: Tensor, s: float, L: int, low: float, high: float) -> Tensor:
    """Llama 3.1's scaled frequencies (see ``rope_inv_freq``), (head_dim // 2,) -> (head_dim // 2,)."""
    wavelen = 2 * math.pi / inv_freq
    low_freq_wavelen, high_freq_wavelen = L / low, L / high
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / s, inv_freq)  # slow pairs: interpolated
    smooth = (L / wavelen - low) / (high - low)  # g: the ramp in turns over L
    smoothed = (1 - smooth) * scaled / s + smooth * scaled
    medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(medium, smoothed, scaled)


def _yarn_hf_inv_freq(head_dim: int, base: float, s: float, L: int, scaling: RopeScaling, device) -> Tensor:
    """YaRN with transformers' dimension-index ramp (see ``rope_inv_freq``), (head_dim // 2,) float32."""
    def correction_dim(rotations: float) -> float:  # the (fractional) pair index that turns ``rotations`` times over L
        return head_dim * math.log(L / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(scaling.beta_fast), correction_dim(scaling.beta_slow)
    if scaling.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # transformers' guard against a zero-width ramp
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1).to(device)
    gamma = 1 - ramp  # 1: keep theta_i (fast pairs, small i), 0: theta_i / s (slow pairs)
    pos_freqs = base ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim)
    return (1.0 / (s * pos_freqs)) * (1 - gamma) + (1.0 / pos_freqs) * gamma


def _inv_freq(head_dim: int, base: float, device) -> Tensor:
    """theta_i = base^(-2i/head_dim), i = 0 .. head_dim/2 - 1, float32 (Hugging Face's expression)."""
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.int64).float() / head_dim))


def _need_seq_len(seq_len: Optional[int]) -> int:
    if seq_len is None:
        raise ValueError(
            "dynamic_ntk frequencies depend on the current sequence length: pass seq_len= (max position + 1)."
        )
    if seq_len < 1:
        raise ValueError(f"seq_len={seq_len} must be a positive length.")
    return seq_len


def rope_cos_sin(
    positions: Tensor, inv_freq: Tensor, *, attention_factor: float = 1.0, layout: str = "half"
) -> tuple[Tensor, Tensor]:
    """cos and sin tables for ``positions`` (any shape P, integer or fractional): each (*P, head_dim), float32.

    Angle of pair i at position p: ``p * inv_freq[i]``. "half" repeats the head_dim/2 angles as
    [a0, a1, ..., a0, a1, ...]; "interleaved" as [a0, a0, a1, a1, ...], matching how ``apply_rope``
    pairs coordinates. Both tables are multiplied by ``attention_factor``.
    """
    _check_layout(layout)
    pos = positions.to(device=inv_freq.device, dtype=torch.float32)  # (*P,)
    angles = pos[..., None] * inv_freq.float()  # (*P, head_dim // 2)
    if layout == "half":
        angles = torch.cat((angles, angles), dim=-1)  # (*P, head_dim)
    else:
        angles = angles.repeat_interleave(2, dim=-1)  # (*P, head_dim)
    return angles.cos() * attention_factor, angles.sin() * attention_factor


class RotaryEmbedding(nn.Module):
    """cos/sin tables for RoPE (Su et al., 2021, arXiv:2104.09864), cached up to ``context_length``.

    forward(positions): positions (T,) integer absolute positions (any shape P works)  ->  (cos, sin),
    each (T, head_dim) float32, laid out for ``layout`` and already multiplied by the scaling's
    attention_factor. Positions below ``context_length`` come from non-persistent buffers (they are not
    weights: nothing is saved in the state dict); larger ones are computed on the fly, so extrapolation
    experiments past the cache work. With "dynamic_ntk" the frequencies depend on ``max(positions) + 1``:
    the cache holds the unscaled tables, used while that length is <= L; longer inputs are computed on
    the fly with rescaled frequencies. (Keys cached earlier keep the frequencies they were rotated with:
    the usual caveat of dynamic NTK with a KV cache.)

    If the module is cast to a low precision (``model.half()``), the rounded tables are rebuilt in
    float32 at the next call: RoPE angles need float32. Tables replaced in another precision (float64,
    say) are rebuilt in float32 from the ``inv_freq`` the module holds then, scaled or not.
    """

    def __init__(
        self,
        head_dim: int,
        *,
        base: float = 10000.0,
        context_length: int = 2048,
        scaling: Optional[RopeScaling] = None,
        layout: str = "half",
        device=None,
    ) -> None:
        super().__init__()
        _check_head_dim(head_dim)
        _check_layout(layout)
        if context_length < 1:
            raise ValueError(f"context_length={context_length} must be a positive number of positions to cache.")
        self.head_dim, self.base, self.context_length = head_dim, base, context_length
        self.scaling, self.layout = scaling, layout
        self._build_cache(device)

    def _build_cache(self, device, inv_freq: Optional[Tensor] = None) -> None:
        """The tables from ``inv_freq`` (kept, in float32) or, without it, from the base and the scaling."""
        if inv_freq is None:
            # For dynamic_ntk the cached tables are the unscaled ones (valid while the length stays <= L).
            seq_len = self.scaling.original_context_length if self._dynamic else None
            inv_freq, self.attention_factor = rope_inv_freq(self.head_dim, self.base, self.scaling, seq_len, device=device)
        inv_freq = inv_freq.to(device=device, dtype=torch.float32)
        cos, sin = rope_cos_sin(
            torch.arange(self.context_length, device=device), inv_freq,
            attention_factor=self.attention_factor, layout=self.layout,
        )  # (context_length, head_dim) each
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # (head_dim // 2,)
        self.register_buffer("cos_cached", cos, persistent=False)
        self.register_buffer("sin_cached", sin, persistent=False)

    def reset_tables(self, device=None) -> None:
        """Recompute the tables from the base and the scaling, on ``device`` (default: where they are now).

        For a model built on the meta device and then given real weights (``hf.load_hf``): the tables are
        buffers, not weights, so loading a state dict does not fill them.
        """
        self._build_cache(self.inv_freq.device if device is None else device)

    @property
    def _dynamic(self) -> bool:
        return self.scaling is not None and self.scaling.kind == "dynamic_ntk"

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        if positions.is_floating_point() or positions.is_complex():
            raise TypeError(
                f"positions must be integer token positions, got dtype {positions.dtype}. For fractional "
                "positions use rope_cos_sin(positions, inv_freq) directly."
            )
        if self.cos_cached.dtype != torch.float32:  # the tables were cast or replaced: rebuild them in float32
            # from the frequencies they hold where those are exact (a caller may have set scaled ones, in
            # float32 or float64); a cast to half precision rounded them, so those are computed again.
            exact = self.inv_freq.dtype in (torch.float32, torch.float64)
            self._build_cache(self.cos_cached.device, self.inv_freq if exact else None)
        if positions.numel() == 0:
            idx = positions.to(self.cos_cached.device)
            return self.cos_cached[idx], self.sin_cached[idx]
        lo, hi = (int(v) for v in torch.aminmax(positions))  # one host sync: cache or not is a Python decision
        if lo < 0:
            raise ValueError(f"positions must be >= 0; got a minimum of {lo}.")
        if self._dynamic and hi + 1 > self.scaling.original_context_length:
            inv_freq, factor = rope_inv_freq(
                self.head_dim, self.base, self.scaling, seq_len=hi + 1, device=self.inv_freq.device
            )
            return rope_cos_sin(positions, inv_freq, attention_factor=factor, layout=self.layout)
        if hi < self.context_length:
            idx = positions.to(self.cos_cached.device)
            return self.cos_cached[idx], self.sin_cached[idx]  # (T, head_dim) each
        return rope_cos_sin(positions, self.inv_freq, attention_factor=self.attention_factor, layout=self.layout)

    def span(self, start: int, end: int) -> tuple[Tensor, Tensor]:
        """cos, sin for the contiguous positions ``start .. end - 1``, each (end - start, head_dim).

        The same as ``self(torch.arange(start, end))``, but inside the cached range it returns views of
        the tables: no index tensor, no device sync. Decoding asks for one position per step.
        """
        if 0 <= start <= end <= self.context_length and not self._dynamic and self.cos_cached.dtype == torch.float32:
            return self.cos_cached[start:end], self.sin_cached[start:end]
        return self(torch.arange(start, end, device=self.inv_freq.device))

    def extra_repr(self) -> str:
        return (
            f"head_dim={self.head_dim}, base={self.base}, context_length={self.context_length}, "
            f"layout={self.layout!r}, scaling={self.scaling}"
        )


# --------------------------------------------------------------------------------------------------
# Applying RoPE
# --------------------------------------------------------------------------------------------------
def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) on the last dim, x1 and x2 its two halves (GPT-NeoX / Hugging Face layout).

    With cos, sin laid out as [a, a], ``x * cos + rotate_half(x) * sin`` rotates each pair
    (x[i], x[i + head_dim/2]) by the angle a[i].
    """
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rotate_pairs(x: Tensor) -> Tensor:
    """[x0, x1, x2, x3, ...] -> [-x1, x0, -x3, x2, ...]: rotate_half for the interleaved layout."""
    x_even, x_odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((-x_odd, x_even), dim=-1).flatten(-2)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor, layout: str = "half") -> Tensor:
    """Rotate the coordinate pairs of x by the angles in cos, sin. Returns x's shape and dtype.

    x: (B, n_head, T, head_dim), or any (..., T, head_dim). cos, sin: broadcastable to x, usually
    (T, head_dim) from ``RotaryEmbedding``; for per-sequence positions (B, T, head_dim), add the head
    axis first with ``cos[:, None]``. Computed in float32.

    layout="half": pairs (i, i + head_dim/2); layout="interleaved": pairs (2i, 2i + 1), which is the
    complex product ``(x[2i] + 1j x[2i+1]) * exp(1j * angle_i)`` of Meta's original Llama code.
    cos and sin must have been built for the same layout (``rope_cos_sin``, ``RotaryEmbedding``).
    """
    _check_layout(layout)
    if x.shape[-1] % 2 != 0:
        raise ValueError(f"the last dim of x (head_dim={x.shape[-1]}) must be even: RoPE rotates pairs.")
    if cos.shape[-1] != x.shape[-1] or sin.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"cos {tuple(cos.shape)} and sin {tuple(sin.shape)} must end in head_dim={x.shape[-1]} like x "
            f"{tuple(x.shape)}; build them with the same head_dim."
        )
    xf = x.float()
    rotated = rotate_half(xf) if layout == "half" else _rotate_pairs(xf)
    return (xf * cos.float() + rotated * sin.float()).to(x.dtype)


def interleaved_to_half(x: Tensor) -> Tensor:
    """Permute the last dim from interleaved to half layout: [x0, x1, x2, x3, ...] -> [x0, x2, ..., x1, x3, ...].

    Pair (2i, 2i+1) lands on (i, i + head_dim/2), so with tables built for each layout::

        apply_rope(interleaved_to_half(x), cos_half, sin_half)
            == interleaved_to_half(apply_rope(x, cos_interleaved, sin_interleaved, "interleaved"))

    Because q·k is unchanged when q and k are permuted alike, applying this to the rows of each head of
    W_q and W_k turns a Meta checkpoint into a Hugging Face one (their ``permute`` in convert_llama_weights).
    """
    return torch.cat((x[..., 0::2], x[..., 1::2]), dim=-1)


def half_to_interleaved(x: Tensor) -> Tensor:
    """Inverse of ``interleaved_to_half``: [x0, ..., x_{d/2-1}, x_{d/2}, ...] -> [x0, x_{d/2}, x1, x_{d/2+1}, ...]."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.stack((x1, x2), dim=-1).flatten(-2)


def rope_matrix(position: Union[int, float], inv_freq: Tensor) -> Tensor:
    """The explicit rotation R_p of the RoFormer paper (Su et al., 2021, eq. 15), (head_dim, head_dim) float32.

    Block-diagonal, block i = [[cos a_i, -sin a_i], [sin a_i, cos a_i]] with a_i = position * inv_freq[i],
    acting on the interleaved pairs (2i, 2i+1): ``apply_rope(x, ..., "interleaved") == x @ R_p.T``.
    For teaching only: it is mostly zeros, which is why nobody multiplies by it. R_m.T @ R_n = R_(n-m)
    is the whole reason q·k depends on m - n only.
    """
    angles = position * inv_freq.float()  # (head_dim // 2,)
    c, s = angles.cos(), angles.sin()
    blocks = torch.stack((torch.stack((c, -s), -1), torch.stack((s, c), -1)), -2)  # (head_dim // 2, 2, 2)
    return torch.block_diag(*blocks)  # (head_dim, head_dim)


# --------------------------------------------------------------------------------------------------
# ALiBi
# --------------------------------------------------------------------------------------------------
def alibi_slopes(n_head: int, *, device=None) -> Tensor:
    """ALiBi head slopes (Press et al., 2022, arXiv:2108.12409), (n_head,) float32.

    For n_head a power of two, ``m_h = 2^(-8h/n_head)``, h = 1..n_head: a geometric sequence from
    2^(-8/n) down to 2^-8. Otherwise, the rule of the paper's official code: the slopes for the largest
    power of two 2^k below n_head, followed by every other slope for 2^(k+1) (its odd-h terms, which fall
    between the first ones), the first n_head - 2^k of them.
    """
    if n_head < 1:
        raise ValueError(f"n_head={n_head} must be a positive number of heads.")
    return torch.tensor(_alibi_slopes_list(n_head), dtype=torch.float32, device=device)


def _alibi_slopes_list(n: int) -> list[float]:
    if n & (n - 1) == 0:  # power of two
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]
    k = 2 ** math.floor(math.log2(n))
    return _alibi_slopes_list(k) + _alibi_slopes_list(2 * k)[0::2][: n - k]


# --------------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------------
def _check_head_dim(head_dim: int) -> None:
    if head_dim < 2 or head_dim % 2 != 0:
        raise ValueError(
            f"head_dim={head_dim} must be a positive even number: RoPE rotates coordinates in pairs. "
            "Choose n_embd and n_head so that n_embd // n_head is even."
        )


def _check_layout(layout: str) -> None:
    if layout not in ROPE_LAYOUTS:
        raise ValueError(
            f"layout={layout!r} is not one of {ROPE_LAYOUTS}: 'half' pairs (i, i + head_dim/2) (Hugging Face), "
            "'interleaved' pairs (2i, 2i+1) (Meta's original Llama)."
        )
