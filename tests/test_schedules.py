"""Tests of retrofit.schedules: values, derivatives, inverses, hazards, parsing, hitting times
(docs/method.md §1.2-1.3, §7.5)."""

from __future__ import annotations

import math

import pytest
import torch

from retrofit.schedules import (
    HITTING_TIME_EPS,
    CosineSchedule,
    GeometricSchedule,
    LinearSchedule,
    PolynomialSchedule,
    Schedule,
    SinSchedule,
    make_schedule,
    sample_hitting_times,
    sample_unmasking_times,
)

ALL = [
    LinearSchedule(),
    GeometricSchedule(),
    GeometricSchedule(min=5.0, max=0.01),
    SinSchedule(),
    CosineSchedule(),
    PolynomialSchedule(2.0),
    PolynomialSchedule(0.5),
]
IDS = [str(s.to_dict()) for s in ALL]
GRID = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)


def binomial_close(count: float, n: int, p: float, z: float = 4.5) -> None:
    """count ~ Binomial(n, p) within z standard errors."""
    se = math.sqrt(n * p * (1 - p))
    assert abs(count - n * p) <= z * se, (count, n * p, se)


@pytest.mark.parametrize("sched", ALL, ids=IDS)
def test_derivative_matches_finite_differences(sched: Schedule) -> None:
    h = 1e-6
    fd = (sched.alpha(GRID + h) - sched.alpha(GRID - h)) / (2 * h)
    torch.testing.assert_close(sched.alpha_prime(GRID), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("sched", ALL, ids=IDS)
def test_inverse_of_alpha_is_identity(sched: Schedule) -> None:
    torch.testing.assert_close(sched.inverse(sched.alpha(GRID)), GRID, rtol=0, atol=1e-9)


@pytest.mark.parametrize("sched", ALL, ids=IDS)
def test_rate_is_hazard(sched: Schedule) -> None:
    expected = sched.alpha_prime(GRID) / (1 - sched.alpha(GRID))
    torch.testing.assert_close(sched.rate(GRID), expected, rtol=1e-9, atol=0)
    guarded = sched.alpha_prime(GRID) / (1 - sched.alpha(GRID) + 1e-3)
    torch.testing.assert_close(sched.rate(GRID, eps=1e-3), guarded, rtol=1e-9, atol=0)


@pytest.mark.parametrize("sched", [s for s in ALL if not isinstance(s, GeometricSchedule)], ids=str)
def test_proper_schedules_hit_endpoints(sched: Schedule) -> None:
    assert abs(sched.alpha(0.0)) <= 1e-6
    assert abs(sched.alpha(1.0) - 1.0) <= 1e-6


def test_geometric_endpoints_and_reference_vectors() -> None:
    geo = GeometricSchedule()  # (10, 0.01), the retrofit's insertion schedule
    assert geo.alpha(0.0) == pytest.approx(math.exp(-10.0), rel=1e-14)
    assert geo.alpha(1.0) == pytest.approx(math.exp(-0.01), rel=1e-14)
    # docs/method.md §1.2 table and §7.5: (t, alpha, alpha', hazard)
    table = [
        (0.0, 4.539993e-5, 3.136116e-3, 0.003136),
        (0.1, 6.658425e-3, 0.2305199, 0.232065),
        (0.25, 0.1689286, 2.075105, 2.496903),
        (0.5, 0.7288934, 1.592212, 5.873012),
        (0.6, 0.8534321, 0.9343421, 6.374806),
        (0.75, 0.9453178, 0.3672102, 6.715350),
        (0.9, 0.9802451, 0.1351051, 6.839071),
        (1.0, 0.9900498, 0.0683902, 6.873274),
    ]
    for t, a, da, h in table:
        assert geo.alpha(t) == pytest.approx(a, rel=2e-6), t
        assert geo.alpha_prime(t) == pytest.approx(da, rel=2e-6), t
        assert geo.rate(t) == pytest.approx(h, rel=2e-5, abs=1e-6), t
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    torch.testing.assert_close(geo.inverse(geo.alpha(t)), t, rtol=0, atol=1e-9)
    # integrated hazard over [0, 1] ~= 4.61 (docs/method.md §1.2)
    assert -math.log(1 - geo.alpha(1.0)) + math.log(1 - geo.alpha(0.0)) == pytest.approx(4.61, abs=5e-3)


def test_sin_and_cosine_reference_vectors() -> None:
    sin, cos = SinSchedule(), CosineSchedule()
    assert sin.alpha(0.5) == pytest.approx(0.7071068, abs=1e-7)
    assert sin.alpha_prime(0.5) == pytest.approx(1.1107207, abs=1e-7)
    assert sin.rate(0.5) == pytest.approx(3.7922378, abs=1e-7)
    assert cos.alpha(0.5) == pytest.approx(0.2928932, abs=1e-7)
    assert cos.rate(0.5) == pytest.approx(1.5707963, abs=1e-7)
    closed = (math.pi / 2) * torch.tan(math.pi * GRID / 2)
    torch.testing.assert_close(cos.rate(GRID), closed, rtol=1e-12, atol=0)


def test_linear_rate_and_guard() -> None:
    lin = LinearSchedule()
    assert lin.rate(0.6) == pytest.approx(2.5, rel=1e-15)
    assert lin.rate(0.6, eps=1e-6) == pytest.approx(2.4999938, abs=1e-7)
    assert lin.rate(1.0) == math.inf
    assert lin.rate(1.0, eps=1e-6) == pytest.approx(1e6, rel=1e-9)


def test_types_shapes_and_devices_are_preserved() -> None:
    geo = GeometricSchedule()
    t32 = torch.rand(3, 5, 2, generator=torch.Generator().manual_seed(0))
    for fn in (geo.alpha, geo.alpha_prime, geo.inverse, geo.rate):
        out = fn(t32)
        assert out.dtype == torch.float32 and out.shape == t32.shape
        torch.testing.assert_close(out.double(), fn(t32.double()), rtol=1e-6, atol=0)
    assert isinstance(geo.alpha(0.5), float)
    assert geo.alpha(torch.tensor(0.5, dtype=torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("linear", LinearSchedule()),
        ("geometric", GeometricSchedule(10.0, 0.01)),
        ("geometric:5,0.01", GeometricSchedule(5.0, 0.01)),
        ({"name": "geometric", "min": 10, "max": 0.01}, GeometricSchedule(10.0, 0.01)),
        ("polynomial:2", PolynomialSchedule(2.0)),
        ({"name": "polynomial", "exponent": "3"}, PolynomialSchedule(3.0)),
        (" Cosine ", CosineSchedule()),
        ("sin", SinSchedule()),
    ],
)
def test_make_schedule_parses_and_round_trips(spec, expected) -> None:
    sched = make_schedule(spec)
    assert sched == expected
    assert make_schedule(sched.to_dict()) == sched
    assert make_schedule(sched) is sched


def test_to_dict_contents() -> None:
    assert GeometricSchedule().to_dict() == {"name": "geometric", "min": 10.0, "max": 0.01}
    assert LinearSchedule().to_dict() == {"name": "linear"}
    assert PolynomialSchedule(2).to_dict() == {"name": "polynomial", "exponent": 2.0}


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("quadratic", "unknown schedule name 'quadratic'"),
        ({"min": 10}, "no 'name' field"),
        ({"name": "geometric", "mn": 10}, "unknown field 'mn'"),
        ({"name": "linear", "exponent": 2}, "unknown field 'exponent'"),
        ({"name": "geometric", "min": "ten"}, "field 'min' must be a number"),
        ("geometric:0.01,10", "need min > max > 0"),
        ("polynomial:0", "need exponent > 0"),
        ("polynomial:1,2", "at most 1 parameters"),
        (3, "must be a str, dict or Schedule"),
    ],
)
def test_make_schedule_errors(spec, match) -> None:
    with pytest.raises(ValueError, match=match):
        make_schedule(spec)


def test_hitting_times_from_given_uniforms() -> None:
    u = torch.tensor([0.0, 0.25, 0.5, 0.999], dtype=torch.float64)
    expected = HITTING_TIME_EPS + (1 - HITTING_TIME_EPS) * u
    torch.testing.assert_close(sample_hitting_times(LinearSchedule(), u), expected, rtol=0, atol=0)
    geo = GeometricSchedule()
    u = torch.tensor([geo.alpha(0.3), geo.alpha(0.0) / 2, (1 + geo.alpha(1.0)) / 2], dtype=torch.float64)
    t1 = sample_hitting_times(geo, u)
    assert t1[0].item() == pytest.approx(HITTING_TIME_EPS + (1 - HITTING_TIME_EPS) * 0.3, abs=1e-12)
    assert t1[1] < 0 and t1[2] > 1  # always / never inserted (docs/method.md §1.2)


def test_geometric_hitting_time_distribution() -> None:
    geo = GeometricSchedule()
    n = 1_000_000
    t1 = sample_hitting_times(geo, (n,), generator=torch.Generator().manual_seed(1))
    assert t1.dtype == torch.float32 and t1.shape == (n,)
    binomial_close((t1 > 1).sum().item(), n, 1 - geo.alpha(1.0))  # ~0.995 % never inserted
    binomial_close((t1 < 0).sum().item(), n, geo.alpha(0.0))  # ~4.5e-5 always inserted
    for s in (0.1, 0.3, 0.6, 0.9):  # P(T1 <= s) = alpha((s - eps) / (1 - eps))
        p = geo.alpha((s - HITTING_TIME_EPS) / (1 - HITTING_TIME_EPS))
        binomial_close((t1 <= s).sum().item(), n, p)


def test_unmasking_times_linear_closed_form_and_order() -> None:
    gen = torch.Generator().manual_seed(2)
    t1 = torch.tensor([-0.5, 0.0, 0.2, 0.7, 1.0, 1.3], dtype=torch.float64)
    u = torch.rand(6, generator=gen, dtype=torch.float64)
    t2 = sample_unmasking_times(LinearSchedule(), t1, u=u)
    inside = (t1 >= 0) & (t1 <= 1)
    torch.testing.assert_close(t2[inside], (t1 + u * (1 - t1))[inside], rtol=0, atol=1e-15)
    assert t2[0].item() == pytest.approx(u[0].item())  # T1 < 0: beta^{-1}(u') from t = 0
    assert t2[-1].item() == 1.3  # T1 > 1: never unmasked
    assert bool((t2 >= t1).all())


def test_unmasking_times_truncated_cdf_for_cosine() -> None:
    beta, n, t1_value = CosineSchedule(), 400_000, 0.3
    t1 = torch.full((n,), t1_value)
    t2 = sample_unmasking_times(beta, t1, generator=torch.Generator().manual_seed(3))
    assert t2.dtype == torch.float32 and bool((t2 >= t1).all()) and bool((t2 <= 1).all())
    b1 = beta.alpha(t1_value)
    for s in (0.4, 0.6, 0.8, 0.95):  # P(T2 <= s | T1) = (b(s) - b(T1)) / (1 - b(T1)) (docs/method.md §1.3)
        binomial_close((t2 <= s).sum().item(), n, (beta.alpha(s) - b1) / (1 - b1))
