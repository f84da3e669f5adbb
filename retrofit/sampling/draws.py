"""Random draws of the samplers: per-row counter-based uniforms and Poisson counts.

Every row of a sampler batch has its own random stream, keyed by ``row_seed(seed, example_id,
sample)``: a stable 63-bit mix (splitmix64 over the three integers; never Python's ``hash()``).
:class:`RowRandom` is *counter based* (like Philox / JAX's threefry): the uniform of row b, draw
call c, column j is a pure function ``U(key_b, c, j)`` computed with 32-bit integer hashing in
int64 tensor arithmetic. So

* a row's numbers do not depend on the other rows, on the batch size or order, or on the width
  the batch happens to be trimmed to (column j is the same number whatever the width): a row
  "consumes" nothing, there is no shared state to shift;
* the numbers are the same on every device (integer arithmetic is exact), and they are made on
  the device where they are used (no CPU generator, no host-to-device copy);
* Poisson counts come by inverse CDF from one uniform each (:func:`poisson_from_uniform`), so
  a count is also a pure function of its row's key, the call and the column.

The draw counter c advances once per ``uniform`` / ``poisson`` call, for the whole batch: the
samplers make the same sequence of calls for every row (it depends on the config only, never on
the data), so row b's c-th call is the same call whether b runs alone or in any batch.

:class:`RandomSource` is the older single-generator source (one ``torch.Generator`` for the
whole batch, so rows are *not* independent of each other). The samplers no longer use it; it is
kept for the step helpers' unit tests and for callers that want ``torch.poisson``'s speed.

Example::

    keys = row_seeds(seed=0, example_ids=[7, 3], num_samples=2)   # rows (7,0) (7,1) (3,0) (3,1)
    rand = RowRandom(torch.tensor(keys))
    u = rand.uniform(4, 10, device)       # [4, 10] float64 in [0, 1)
    e = rand.poisson(rates)               # rates [4, W] -> int64 counts [4, W]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "RandomSource",
    "RowRandom",
    "poisson_from_uniform",
    "resolve_row_keys",
    "row_seed",
    "row_seeds",
    "seed_from_generator",
]

_MASK64 = (1 << 64) - 1
_MASK32 = 0xFFFFFFFF


def _splitmix64(x: int) -> int:
    """splitmix64's finalizer on a python int (mod 2^64): a stable bijective 64-bit mix."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def row_seed(seed: int, example_id: int, sample: int = 0) -> int:
    """The 63-bit key of one row: a stable mix of (seed, example identity, sample number).

    The same triple gives the same key on every machine and Python version (no ``hash()``);
    changing any one of the three gives an unrelated key. Negative or huge integers are taken
    mod 2^64. Example: ``row_seed(0, 0, 0) != row_seed(0, 0, 1) != row_seed(0, 1, 0)``.
    """
    x = _splitmix64(int(seed) & _MASK64)
    x = _splitmix64(x ^ (int(example_id) & _MASK64))
    x = _splitmix64(x ^ ((int(sample) & _MASK64) * 0xD6E8FEB86659FD93 & _MASK64))
    return x >> 1


def row_seeds(seed: int, example_ids: list[int], num_samples: int) -> list[int]:
    """Keys of the rows ``(example_ids[i], sample j)`` for j < num_samples, prompt-major
    (the order of :func:`retrofit.sampling.batch.repeat_rows`).

    Raises:
        ValueError: num_samples < 1, or an example id is not an integer.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    bad = [e for e in example_ids if isinstance(e, bool) or not isinstance(e, int)]
    if bad:
        raise ValueError(f"example_ids must be integers (an example's index in its set), got {bad[0]!r}")
    return [row_seed(seed, e, j) for e in example_ids for j in range(num_samples)]


def seed_from_generator(generator: torch.Generator | None) -> int:
    """A 62-bit base seed drawn from ``generator`` (None: torch's global RNG), for callers of the
    samplers that pass a generator instead of a seed (one int64 draw; the generator advances)."""
    device = generator.device if generator is not None else torch.device("cpu")
    return int(torch.randint(0, 1 << 62, (), generator=generator, device=device))


def resolve_row_keys(
    num_prompts: int,
    num_samples: int,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    example_ids: list[int] | None = None,
    row_keys: list[int] | None = None,
) -> list[int]:
    """Row keys of a sampler call with ``num_prompts`` prompts x ``num_samples`` (prompt-major).

    ``row_keys`` given: used as they are (one per row, e.g. ``row_seeds`` of a caller that
    batches rows of several examples and samples itself). Otherwise row (prompt i, sample j)
    gets ``row_seed(seed, example_ids[i], j)``. ``seed`` None: one seed
    is drawn from ``generator`` (None: torch's global RNG), so a seeded generator still gives a
    reproducible call. ``example_ids`` None: the prompt's index in this call (0, 1, ...): rows are
    then independent of each other's content but not of their position in the call; pass the
    example's index in its data set to make a row's draws independent of how it was batched.

    Raises:
        ValueError: len(example_ids) != num_prompts, a non-integer id, num_samples < 1, or
            len(row_keys) != num_prompts * num_samples.
    """
    if row_keys is not None:
        if len(row_keys) != num_prompts * num_samples:
            raise ValueError(
                f"row_keys: {len(row_keys)} keys for {num_prompts} prompts x {num_samples} samples"
            )
        return [int(k) for k in row_keys]
    ids = list(range(num_prompts)) if example_ids is None else list(example_ids)
    if len(ids) != num_prompts:
        raise ValueError(f"example_ids: {len(ids)} ids for {num_prompts} prompts; pass one id per prompt")
    base = seed_from_generator(generator) if seed is None else int(seed)
    return row_seeds(base, ids, num_samples)


def _hash32(x: Tensor) -> Tensor:
    """A bijective 32-bit integer hash with strong avalanche (the "lowbias32" form with
    TheIronBorn's constants 0x21F0AAAD, 0x735A2D97). Values stay in [0, 2^32) in int64 and both
    constants are < 2^31, so no product exceeds 2^63: exact on every device. In place on x."""
    x.bitwise_xor_(x >> 16).mul_(0x21F0AAAD).bitwise_and_(_MASK32)
    x.bitwise_xor_(x >> 15).mul_(0x735A2D97).bitwise_and_(_MASK32)
    return x.bitwise_xor_(x >> 15)


def _validated_rates(rates: Tensor) -> Tensor:
    r = rates.detach().to(torch.float64)
    if not bool(torch.isfinite(r).all()) or bool((r < 0).any()):
        raise ValueError("sampler: Poisson rates must be finite and >= 0; check the model's expected_gaps")
    return r


class RowRandom:
    """Per-row counter-based random numbers of one sampler run (see the module docstring).

    Args:
        keys: [B] int64 row keys (``row_seeds``), or a list of ints; kept on keys' device.

    The methods have the signatures of :class:`RandomSource` (``extra`` is accepted and
    ignored: column j's number never depends on the width), so the step helpers take either.
    """

    def __init__(self, keys: Tensor | list[int]):
        k = torch.as_tensor(keys, dtype=torch.long)
        if k.dim() != 1:
            raise ValueError(f"RowRandom: keys must be 1-D [B], got shape {tuple(k.shape)}")
        self.keys = k
        self.calls = 0
        self._k0 = k & _MASK32
        self._k1 = (k >> 32) & _MASK32

    def to(self, device: torch.device | str) -> RowRandom:
        """The same source (same counter) with its keys on ``device``."""
        out = RowRandom(self.keys.to(device))
        out.calls = self.calls
        return out

    def _row_states(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """Two 32-bit lane states [B] of the current call (the counter then advances)."""
        c = self.calls & _MASK32
        self.calls += 1
        k0, k1 = self._k0.to(device), self._k1.to(device)
        a = _hash32(_hash32(_hash32(k0 ^ 0x3C6EF372) ^ k1) ^ c)
        b = _hash32(_hash32(_hash32(k1 ^ 0xA54FF53A) ^ k0) ^ (c ^ 0x1B873593))
        return a, b

    def uniform(self, batch: int, width: int, device: torch.device | str, extra: int = 0) -> Tensor:
        """U[0, 1) float64 [batch, width] with 53 random bits each; column j of row b is a
        function of (key_b, call, j) only.

        Raises:
            ValueError: batch differs from the number of keys.
        """
        if batch != self.keys.shape[0]:
            raise ValueError(f"RowRandom: {batch} rows requested but {self.keys.shape[0]} keys")
        device = torch.device(device)
        a, b = self._row_states(device)
        j = torch.arange(width, device=device, dtype=torch.long)[None, :]
        hi = _hash32(a[:, None] ^ j).bitwise_right_shift_(11)  # 21 bits
        lo = _hash32(b[:, None] ^ _hash32(j ^ 0x5BD1E995))  # 32 bits
        return hi.mul_(4294967296).add_(lo).to(torch.float64).mul_(2.0**-53)

    def poisson(self, rates: Tensor, extra: int = 0) -> Tensor:
        """Poisson counts (int64, rates' shape and device) by inverse CDF, one uniform each.

        Rates are 1-D [B] (one count per row: column 0 of a draw) or 2-D [B, W].

        Raises:
            ValueError: a rate is negative, NaN or infinite (the model returned a bad ĝ).
        """
        r = _validated_rates(rates)
        if r.dim() == 1:
            u = self.uniform(r.shape[0], 1, r.device)[:, 0]
        else:
            u = self.uniform(r.shape[0], r.shape[1], r.device)
        return poisson_from_uniform(r, u).to(rates.device)


def poisson_from_uniform(rates: Tensor, u: Tensor, tail_sd: float = 8.0) -> Tensor:
    """Poisson(rate) samples by inverse CDF: the smallest k with F(k; rate) > u, exactly.

    Only a window [rate - tail_sd·sqrt(rate) - 8, rate + tail_sd·sqrt(rate) + 8] of k is
    scanned; the CDF below it comes from the regularized upper incomplete gamma function,
    P(K <= k0 - 1) = Q(k0, rate). The mass outside the window is < 1e-12 for any rate (a u in it
    gets the window's edge).

    Args:
        rates: float tensor (any shape) of finite rates >= 0.
        u: float64 uniforms in [0, 1), same shape.
        tail_sd: half-width of the scanned window in standard deviations.

    Returns:
        int64 counts, rates' shape and device.
    """
    lam = rates.to(torch.float64).reshape(-1)
    uu = u.to(device=lam.device, dtype=torch.float64).reshape(-1)
    out = torch.zeros_like(lam, dtype=torch.long)
    live = lam > 0
    if bool(live.any()):
        lam_l, u_l = lam[live], uu[live]
        sd = lam_l.sqrt()
        lo = (lam_l - tail_sd * sd - 8.0).floor().clamp_min(0.0)  # [N]
        width = int((2 * tail_sd * sd + 18.0).max().ceil())
        k = lo[:, None] + torch.arange(width, device=lam.device, dtype=torch.float64)[None, :]  # [N, w]
        pmf = torch.exp(k * torch.log(lam_l)[:, None] - lam_l[:, None] - torch.lgamma(k + 1.0))
        below = torch.where(lo > 0, torch.special.gammaincc(lo.clamp_min(1.0), lam_l), 0.0)
        cdf = below[:, None] + torch.cumsum(pmf, dim=-1)
        steps_past = (cdf <= u_l[:, None]).sum(-1).clamp(max=width - 1)
        out[live] = (lo + steps_past).long()
    return out.reshape(rates.shape)


@dataclass
class RandomSource:
    """One generator for a whole batch (legacy; the samplers use :class:`RowRandom`).

    Draws happen on the generator's device (CPU when no generator is given) in float64 and are
    then moved to the requested device, so a CPU generator gives the same numbers on any device.

    Attributes:
        generator: optional torch.Generator (None = torch's global RNG).
        full_width: when set, every per-slot draw is made at ``full_width`` columns (``+ extra``
            for gaps) and sliced, and Poisson counts use one uniform each (see module docstring).
    """

    generator: torch.Generator | None = None
    full_width: int | None = None

    def _gen_device(self) -> torch.device:
        return self.generator.device if self.generator is not None else torch.device("cpu")

    def _draw(self, shape: tuple[int, ...]) -> Tensor:
        return torch.rand(shape, generator=self.generator, device=self._gen_device(), dtype=torch.float64)

    def uniform(self, batch: int, width: int, device: torch.device, extra: int = 0) -> Tensor:
        """U[0, 1) float64 draws [batch, width] (drawn at [batch, full_width + extra] if set)."""
        draw_width = width if self.full_width is None else self.full_width + extra
        return self._draw((batch, draw_width))[:, :width].to(device)

    def poisson(self, rates: Tensor, extra: int = 0) -> Tensor:
        """Poisson counts (int64, rates' shape and device) for finite rates >= 0.

        Rates are 1-D [B] (one draw per row) or 2-D [B, W]; with ``full_width`` set, 2-D rates are
        drawn at [B, full_width + extra] (zero rates give 0) and sliced.

        Raises:
            ValueError: a rate is negative, NaN or infinite (the model returned a bad ĝ).
        """
        r = _validated_rates(rates)
        if self.full_width is None:
            return torch.poisson(r.to(self._gen_device()), generator=self.generator).to(rates.device).long()
        if r.dim() == 2:
            u = self._draw((r.shape[0], self.full_width + extra))[:, : r.shape[1]]
        else:
            u = self._draw(tuple(r.shape))
        return poisson_from_uniform(r, u.to(r.device)).to(rates.device)
