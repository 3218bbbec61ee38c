"""2-D acoustic wave equation with a varying wave speed, the physics of Poseidon's Wave-Layer and Wave-Gauss.

    u_tt = c(x, y)^2 (u_xx + u_yy)   on a 1 km x 1 km square, u = 0 on the boundary, u_t = 0 at t = 0

Second-order centred differences in space and the leapfrog scheme in time on the interior nodes
``x_i = i h``, ``h = L / (n + 1)``; the step keeps the CFL number ``c_max dt sqrt(2) / h`` at 0.7. For a
constant speed the standing mode ``sin(pi x / L) sin(pi y / L)`` oscillates at the discrete frequency
``(2 / dt) asin(c dt / h sqrt(2 sin^2(pi h / 2L)))``, which the tests check.

Wave speeds (m/s): ``layered_speed`` draws 3 to 6 horizontal layers (interfaces along x, speeds in
[2000, 5000], as in a layered earth), ``gaussian_speed`` a background of 2000 with 2 to 4 Gaussian
inclusions; the initial displacement is a sum of 1 to 3 Gaussian pulses.
"""

from __future__ import annotations

import math

import numpy as np

from nestor_ds.errors import UserError

from ._common import RngLike, as_generator, check_field, check_int, check_real

LENGTH = 1000.0  # m
CFL = 0.7


def nodes(n: int) -> np.ndarray:
    """The interior nodes' coordinates along one axis (m)."""
    return np.arange(1, n + 1) * LENGTH / (n + 1)


def layered_speed(n: int, rng: np.random.Generator) -> np.ndarray:
    """Horizontal layers: constant speed between interfaces drawn along x."""
    k = int(rng.integers(3, 7))
    cuts = np.sort(rng.uniform(0.1, 0.9, k - 1)) * LENGTH
    speeds = rng.uniform(2000.0, 5000.0, k)
    layer = np.searchsorted(cuts, nodes(n))
    return np.repeat(speeds[layer][:, None], n, axis=1)


def gaussian_speed(n: int, rng: np.random.Generator) -> np.ndarray:
    """A background speed of 2000 m/s with 2 to 4 Gaussian inclusions of +-1000 m/s or so."""
    x = nodes(n)
    c = np.full((n, n), 2000.0)
    for _ in range(int(rng.integers(2, 5))):
        cx, cy = rng.uniform(0.2, 0.8, 2) * LENGTH
        width = rng.uniform(0.05, 0.15) * LENGTH
        c += rng.uniform(-800.0, 1500.0) * np.exp(-((x[:, None] - cx) ** 2 + (x[None, :] - cy) ** 2) / width**2)
    return np.maximum(c, 800.0)


def gaussian_pulses(n: int, rng: np.random.Generator) -> np.ndarray:
    """1 to 3 Gaussian pulses of displacement."""
    x = nodes(n)
    u = np.zeros((n, n))
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = rng.uniform(0.25, 0.75, 2) * LENGTH
        width = rng.uniform(0.08, 0.16) * LENGTH
        u += rng.uniform(0.3, 1.0) * np.exp(-((x[:, None] - cx) ** 2 + (x[None, :] - cy) ** 2) / width**2)
    return u


def _laplacian(u: np.ndarray, h: float) -> np.ndarray:
    p = np.pad(u, 1)  # u = 0 on the boundary nodes
    return (p[2:, 1:-1] + p[:-2, 1:-1] + p[1:-1, 2:] + p[1:-1, :-2] - 4.0 * u) / h**2


def simulate_acoustic_wave(
    speed: np.ndarray, u0: np.ndarray, t_final: float, n_frames: int
) -> tuple[np.ndarray, float]:
    """Displacement frames ``[n_frames, n, n]`` (frame 0 = ``u0``, the last at ``t_final`` s) and the time step."""
    n = check_int("n", int(np.shape(speed)[0]), minimum=4)
    c = check_field("speed", speed, (n, n))
    u = check_field("u0", u0, (n, n))
    t_final = check_real("t_final", t_final, low=0.0)
    n_frames = check_int("n_frames", n_frames, minimum=2)
    if c.min() <= 0:
        raise UserError(f"speed must be positive everywhere, got a minimum of {c.min()}")
    h = LENGTH / (n + 1)
    interval = t_final / (n_frames - 1)
    per_frame = max(1, math.ceil(interval / (CFL * h / (c.max() * math.sqrt(2.0)))))
    dt = interval / per_frame
    c2dt2 = (c * dt) ** 2
    prev = u + 0.5 * c2dt2 * _laplacian(u, h)  # u(-dt) by Taylor with u_t(0) = 0, u_tt = c^2 lap u
    frames = np.empty((n_frames, n, n))
    frames[0] = u
    for k in range(1, n_frames):
        for _ in range(per_frame):
            prev, u = u, 2.0 * u - prev + c2dt2 * _laplacian(u, h)
        frames[k] = u
    return frames, dt


def simulate_wave_set(n: int, kind: str, t_final: float, n_frames: int, rng: RngLike) -> tuple[np.ndarray, np.ndarray]:
    """One trajectory of a Wave stand-in: displacement ``[n_frames, n, n]`` and its speed ``[n, n]``; ``kind`` is
    ``layer`` or ``gauss``."""
    gen = as_generator(rng)
    draw = {"layer": layered_speed, "gauss": gaussian_speed}.get(kind)
    if draw is None:
        raise UserError(f"kind must be 'layer' or 'gauss', got {kind!r}")
    c = draw(n, gen)
    frames, _ = simulate_acoustic_wave(c, gaussian_pulses(n, gen), t_final, n_frames)
    return frames, c
