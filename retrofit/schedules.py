"""Insertion / unmasking schedules of FlexMDM and inverse-CDF sampling of hitting times.

A schedule a: [0, 1] -> [0, 1] is an increasing CDF-like curve (docs/method.md §1.2). The insertion
schedule alpha is the CDF of a token's insertion time T1; the unmasking schedule beta drives the
unmasking time T2 >= T1 (docs/method.md §1.3). Every schedule exposes the value ``alpha(t)``, the derivative
``alpha_prime(t)``, the inverse ``inverse(u)`` and the hazard ``rate(t) = a'(t) / (1 - a(t))``.

All methods accept python floats (returning a python float) or floating tensors of any shape and
device (returning a tensor of the same dtype and device). Internally they compute in float64
(float32 on devices without float64 support).

Example::

    from retrofit.schedules import make_schedule, sample_hitting_times, sample_unmasking_times
    alpha = make_schedule({"name": "geometric", "min": 10.0, "max": 0.01})
    T1 = sample_hitting_times(alpha, (8, 1024))
    T2 = sample_unmasking_times(make_schedule("linear"), T1)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, overload

import torch
from torch import Tensor

__all__ = [
    "HITTING_TIME_EPS",
    "CosineSchedule",
    "GeometricSchedule",
    "LinearSchedule",
    "PolynomialSchedule",
    "Schedule",
    "SinSchedule",
    "draw_uniform",
    "make_schedule",
    "sample_hitting_times",
    "sample_unmasking_times",
]

HITTING_TIME_EPS = 1e-6
"""The clamp T1 <- eps + (1 - eps) T1 of docs/method.md §1.3 / §3.5."""


def _work_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


class Schedule(ABC):
    """Abstract schedule a(t) on [0, 1] (docs/method.md §1.2).

    Subclasses implement the float64 tensor functions ``_alpha``, ``_alpha_prime``, ``_inverse``
    and ``_one_minus_alpha`` (a numerically stable 1 - a(t)); the public methods handle python
    floats, dtypes and devices.
    """

    name: ClassVar[str]

    @abstractmethod
    def _alpha(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def _alpha_prime(self, t: Tensor) -> Tensor: ...

    @abstractmethod
    def _inverse(self, u: Tensor) -> Tensor: ...

    def _one_minus_alpha(self, t: Tensor) -> Tensor:
        return 1.0 - self._alpha(t)

    @overload
    def _apply(self, fn: Any, x: float) -> float: ...

    @overload
    def _apply(self, fn: Any, x: Tensor) -> Tensor: ...

    def _apply(self, fn, x):
        if isinstance(x, Tensor):
            out_dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
            return fn(x.to(_work_dtype(x.device))).to(out_dtype)
        return float(fn(torch.tensor(float(x), dtype=torch.float64)))

    def alpha(self, t: float | Tensor) -> float | Tensor:
        """Schedule value a(t) (docs/method.md §1.2). Same shape/dtype/device as ``t``."""
        return self._apply(self._alpha, t)

    def alpha_prime(self, t: float | Tensor) -> float | Tensor:
        """Derivative a'(t) with respect to t (docs/method.md §1.2). Same shape/dtype/device as ``t``."""
        return self._apply(self._alpha_prime, t)

    def inverse(self, u: float | Tensor) -> float | Tensor:
        """Inverse a^{-1}(u), used for inverse-CDF sampling (docs/method.md §1.2, §1.3).

        ``u`` outside the range of a maps outside [0, 1] (geometric) or is clamped to [0, 1]
        (sin, cosine), as in the reference code.
        """
        return self._apply(self._inverse, u)

    def rate(self, t: float | Tensor, eps: float = 0.0) -> float | Tensor:
        """Hazard h(t) = a'(t) / (1 - a(t) + eps) (docs/method.md §1.1, §1.2; guard eps of §3.2).

        ``1 - a(t)`` is evaluated in a cancellation-free closed form per schedule, so the cosine
        hazard equals its closed form (pi/2) tan(pi t / 2) and the linear one 1 / (1 - t + eps).
        With ``eps = 0`` the hazard of a schedule with a(1) = 1 is inf (or huge) at t = 1.
        """
        return self._apply(lambda x: self._alpha_prime(x) / (self._one_minus_alpha(x) + eps), t)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description accepted by :func:`make_schedule`, e.g. {"name": "linear"}."""
        return {"name": self.name, **asdict(self)}  # type: ignore[call-overload]


@dataclass(frozen=True)
class LinearSchedule(Schedule):
    """a(t) = t; hazard 1 / (1 - t) (docs/method.md §1.2)."""

    name: ClassVar[str] = "linear"

    def _alpha(self, t: Tensor) -> Tensor:
        return t.clone()

    def _alpha_prime(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def _inverse(self, u: Tensor) -> Tensor:
        return u.clone()

    def _one_minus_alpha(self, t: Tensor) -> Tensor:
        return 1.0 - t


@dataclass(frozen=True)
class GeometricSchedule(Schedule):
    """a(t) = exp(-min^{1-t} max^t) (docs/method.md §1.2); the retrofit's insertion schedule (10, 0.01).

    Not a proper CDF on [0, 1]: a(0) = exp(-min) > 0 and a(1) = exp(-max) < 1, so inverse-CDF
    sampling gives a few negative (always inserted) and > 1 (never inserted) hitting times.

    Args:
        min: rate at t = 0 (> max). Default 10.0.
        max: rate at t = 1 (> 0). Default 0.01.

    Raises:
        ValueError: unless min > max > 0.
    """

    name: ClassVar[str] = "geometric"
    min: float = 10.0
    max: float = 0.01

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min) and self.min > self.max > 0):
            raise ValueError(
                f"geometric schedule: need min > max > 0 (a increasing), got min={self.min}, max={self.max}"
            )

    def _log_rate(self, t: Tensor) -> Tensor:  # ln(min^{1-t} max^t)
        return (1.0 - t) * math.log(self.min) + t * math.log(self.max)

    def _alpha(self, t: Tensor) -> Tensor:
        return torch.exp(-torch.exp(self._log_rate(t)))

    def _alpha_prime(self, t: Tensor) -> Tensor:
        lam = torch.exp(self._log_rate(t))
        return torch.exp(-lam) * lam * (math.log(self.min) - math.log(self.max))

    def _inverse(self, u: Tensor) -> Tensor:
        u = u.clamp(0.0, 1.0)
        return (torch.log(-torch.log(u)) - math.log(self.min)) / (math.log(self.max) - math.log(self.min))

    def _one_minus_alpha(self, t: Tensor) -> Tensor:
        return -torch.expm1(-torch.exp(self._log_rate(t)))


@dataclass(frozen=True)
class SinSchedule(Schedule):
    """a(t) = sin(pi t / 2) (docs/method.md §1.2)."""

    name: ClassVar[str] = "sin"

    def _alpha(self, t: Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * t)

    def _alpha_prime(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * t)

    def _inverse(self, u: Tensor) -> Tensor:
        return torch.arcsin(u.clamp(0.0, 1.0)) * (2.0 / math.pi)

    def _one_minus_alpha(self, t: Tensor) -> Tensor:
        # 1 - sin(x) = 2 sin^2(pi/4 - x/2)
        return 2.0 * torch.sin(0.25 * math.pi * (1.0 - t)) ** 2


@dataclass(frozen=True)
class CosineSchedule(Schedule):
    """a(t) = 1 - cos(pi t / 2); hazard (pi/2) tan(pi t / 2) (docs/method.md §1.2)."""

    name: ClassVar[str] = "cosine"

    def _alpha(self, t: Tensor) -> Tensor:
        return 1.0 - torch.cos(0.5 * math.pi * t)

    def _alpha_prime(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def _inverse(self, u: Tensor) -> Tensor:
        return torch.arccos(1.0 - u.clamp(0.0, 1.0)) * (2.0 / math.pi)

    def _one_minus_alpha(self, t: Tensor) -> Tensor:
        return torch.cos(0.5 * math.pi * t)


@dataclass(frozen=True)
class PolynomialSchedule(Schedule):
    """a(t) = t^exponent (docs/method.md §1.2).

    Args:
        exponent: e > 0.

    Raises:
        ValueError: unless exponent is a finite number > 0.
    """

    name: ClassVar[str] = "polynomial"
    exponent: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.exponent) and self.exponent > 0):
            raise ValueError(f"polynomial schedule: need exponent > 0, got exponent={self.exponent}")

    def _alpha(self, t: Tensor) -> Tensor:
        return t.clamp_min(0.0) ** self.exponent

    def _alpha_prime(self, t: Tensor) -> Tensor:
        return self.exponent * t.clamp_min(0.0) ** (self.exponent - 1.0)

    def _inverse(self, u: Tensor) -> Tensor:
        return u.clamp_min(0.0) ** (1.0 / self.exponent)

    def _one_minus_alpha(self, t: Tensor) -> Tensor:
        return -torch.expm1(self.exponent * torch.log(t.clamp_min(0.0)))


_REGISTRY: dict[str, type[Schedule]] = {
    cls.name: cls
    for cls in (LinearSchedule, GeometricSchedule, SinSchedule, CosineSchedule, PolynomialSchedule)
}


def make_schedule(spec: dict[str, Any] | str | Schedule) -> Schedule:
    """Build a schedule from a name, a "name:arg,arg" string, a dict or a Schedule.

    Examples: ``"linear"``, ``"geometric"`` (10, 0.01), ``"geometric:5,0.01"``, ``"polynomial:2"``,
    ``{"name": "geometric", "min": 10, "max": 0.01}``, ``{"name": "polynomial", "exponent": 2}``.

    Args:
        spec: the description; a Schedule instance is returned unchanged.

    Returns:
        The Schedule.

    Raises:
        ValueError: unknown name, unknown or non-numeric parameter, or invalid parameter values.
    """
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, str):
        name, _, arg_text = spec.strip().partition(":")
        args = [a for a in arg_text.split(",") if a.strip()] if arg_text else []
        cls = _lookup(name)
        param_names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        if len(args) > len(param_names):
            raise ValueError(
                f"schedule {spec!r}: {cls.name} takes at most {len(param_names)} parameters {param_names}"
            )
        params: dict[str, Any] = dict(zip(param_names, args))
    elif isinstance(spec, dict):
        if "name" not in spec:
            raise ValueError(f"schedule dict {spec!r} has no 'name' field; e.g. {{'name': 'linear'}}")
        cls = _lookup(str(spec["name"]))
        params = {k: v for k, v in spec.items() if k != "name"}
    else:
        raise ValueError(f"schedule must be a str, dict or Schedule, got {type(spec).__name__}")
    return cls(**_numeric_params(cls, params))


def _lookup(name: str) -> type[Schedule]:
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown schedule name {name!r}; choose one of {sorted(_REGISTRY)}")
    return _REGISTRY[key]


def _numeric_params(cls: type[Schedule], params: dict[str, Any]) -> dict[str, float]:
    allowed = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    out = {}
    for key, value in params.items():
        if key not in allowed:
            raise ValueError(
                f"schedule {cls.name!r}: unknown field {key!r}; allowed fields: {sorted(allowed) or 'none'}"
            )
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"schedule {cls.name!r}: field {key!r} must be a number, got {value!r}"
            ) from None
    return out


def draw_uniform(
    shape: tuple[int, ...] | torch.Size,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """U[0, 1) draws of ``shape`` on ``device``.

    The draw happens on the generator's device and is then moved, so a CPU generator gives the
    same numbers whatever ``device`` is.
    """
    gen_device = generator.device if generator is not None else device
    u = torch.rand(tuple(shape), generator=generator, device=gen_device, dtype=dtype)
    return u.to(device) if device is not None else u


def sample_hitting_times(
    schedule: Schedule,
    shape_or_u: tuple[int, ...] | torch.Size | Tensor,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Insertion times T1 = a^{-1}(u), then T1 <- eps + (1 - eps) T1, eps = 1e-6 (docs/method.md §1.3).

    P(T1 <= s) = a(s). For the geometric schedule, u > a(1) gives T1 > 1 (never inserted during
    training) and u < a(0) gives T1 < 0 (always inserted); this is the method (docs/method.md §1.2).

    Args:
        schedule: the insertion schedule alpha.
        shape_or_u: an output shape (u is drawn U[0, 1)) or a tensor of uniforms u in [0, 1].
        generator: optional torch.Generator for the draw.
        device: device of the result when a shape is given (default: CPU / generator's device).
        dtype: float dtype of the result when a shape is given; a given u keeps its dtype.

    Returns:
        T1, a float tensor of the given shape (may hold values < 0 or > 1, or +-inf at u = 0/1).
    """
    if isinstance(shape_or_u, Tensor):
        u, dtype = shape_or_u, shape_or_u.dtype
    else:
        u = draw_uniform(shape_or_u, generator=generator, device=device)
    t1 = schedule.inverse(u.to(_work_dtype(u.device)))
    return (HITTING_TIME_EPS + (1.0 - HITTING_TIME_EPS) * t1).to(dtype)


def sample_unmasking_times(
    schedule: Schedule,
    T1: Tensor,
    generator: torch.Generator | None = None,
    u: Tensor | None = None,
) -> Tensor:
    """Unmasking times T2 = b^{-1}(u' (1 - b(T1)) + b(T1)), the truncation of b to [T1, 1]
    (docs/method.md §1.3).

    For linear b this is T2 = T1 + u' (1 - T1). For T1 outside [0, 1] (geometric insertion) b is
    evaluated at T1 clamped to [0, 1]: T1 > 1 gives T2 = T1 (never unmasked), T1 < 0 gives
    T2 = b^{-1}(u') (present from the start, unmasked at a b-distributed time). T2 >= T1 always.

    Args:
        schedule: the unmasking schedule beta.
        T1: insertion times, float tensor of any shape.
        generator: optional torch.Generator for u' ~ U[0, 1).
        u: optional uniforms u' of T1's shape (overrides the draw; for tests).

    Returns:
        T2, same shape/dtype/device as T1.
    """
    work = _work_dtype(T1.device)
    if u is None:
        u = draw_uniform(T1.shape, generator=generator, device=T1.device, dtype=work)
    b1 = schedule.alpha(T1.to(work).clamp(0.0, 1.0))
    t2 = schedule.inverse(u.to(work) * (1.0 - b1) + b1)
    return torch.maximum(t2, T1.to(work)).to(T1.dtype)
