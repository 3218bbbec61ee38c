"""Argument checks, frame clocks and random fields shared by the solvers.

Every solver checks the same kinds of argument; keeping the checks in one place keeps
the error messages uniform: each ``ValueError`` names the argument at fault.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

from nestor_ds.errors import UserError

RngLike = np.random.Generator | int


def as_generator(rng: RngLike) -> np.random.Generator:
    """Accept a Generator (used as is, so callers can share one stream) or an int seed."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, Integral) and not isinstance(rng, bool):
        if rng < 0:
            raise UserError(f"rng seed must be non-negative, got {rng}")
        return np.random.default_rng(int(rng))
    raise UserError(f"rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}")


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int of at least ``minimum``; anything else raises UserError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise UserError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise UserError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_real(
    name: str, value: object, *, low: float | None = None, high: float | None = None, strict_low: bool = True
) -> float:
    """A finite real number in (low, high] (or [low, high] when ``strict_low`` is False)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise UserError(f"{name} must be a finite real number, got {value!r}")
    value = float(value)
    if low is not None and (value <= low if strict_low else value < low):
        bound = ">" if strict_low else ">="
        raise UserError(f"{name} must be {bound} {low}, got {value}")
    if high is not None and value > high:
        raise UserError(f"{name} must be <= {high}, got {value}")
    return value


def check_field(name: str, value: object, shape: tuple[int, ...]) -> np.ndarray:
    """A finite float64 copy of a user-supplied field of the expected shape."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape:
        raise UserError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise UserError(f"{name} must be finite everywhere")
    return arr.copy()


def inclusive_frame_times(t_final: float, n_frames: int) -> np.ndarray:
    """Frame 0 is the initial state and the last frame is ``t_final`` (PDEBench/PDEArena layout)."""
    return np.linspace(0.0, t_final, n_frames)


def steps_between(interval: float, dt_max: float) -> tuple[int, float]:
    """Split ``interval`` into equal steps no longer than ``dt_max`` so frames land exactly."""
    steps = max(1, math.ceil(interval / dt_max * (1.0 - 1e-12)))
    return steps, interval / steps


def periodic_grf(
    n: int, rng: np.random.Generator, alpha: float = 2.5, tau: float = 7.0, sigma: float | None = None
) -> np.ndarray:
    """Sample a mean-zero periodic Gaussian field on [0,1)^2 with covariance sigma^2 (-Lap + tau^2)^(-alpha).

    This is the prior FNO draws Navier-Stokes initial vorticity from (sigma = tau^(alpha-1));
    colouring white noise in Fourier space keeps the sample real without enforcing Hermitian
    symmetry by hand, and the factor n makes the point variance independent of the grid.
    """
    if sigma is None:
        sigma = tau ** (alpha - 1.0)
    k = 2.0 * np.pi * np.fft.fftfreq(n, d=1.0 / n)
    kr = 2.0 * np.pi * np.fft.rfftfreq(n, d=1.0 / n)
    k2 = k[:, None] ** 2 + kr[None, :] ** 2
    sqrt_eig = sigma * (k2 + tau**2) ** (-alpha / 2.0)
    sqrt_eig[0, 0] = 0.0
    noise_hat = np.fft.rfft2(rng.standard_normal((n, n)))
    return np.fft.irfft2(n * sqrt_eig * noise_hat, s=(n, n))


def unit_random_field(n: int, rng: np.random.Generator, alpha: float = 2.5, tau: float = 7.0) -> np.ndarray:
    """A smooth periodic random field scaled to max |value| = 1, for perturbations of a given size."""
    field = periodic_grf(n, rng, alpha=alpha, tau=tau)
    peak = np.max(np.abs(field))
    return field / peak if peak > 0 else field
