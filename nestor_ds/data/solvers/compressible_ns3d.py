"""3-D compressible flow on the periodic unit cube, the PDEBench 3-D CFD set-up (ideal gas, gamma = 5/3).

    rho_t + div(rho v) = 0,  (rho v)_t + div(rho v v + p I) = 0,  E_t + div((E + p) v) = 0

PDEBench's 3-D sets use eta = zeta = 1e-8, so the viscous stress is dropped here (the 2-D solver keeps it).
The scheme is the 2-D solver's, one axis more: conservative finite volume with HLL fluxes on minmod-limited
MUSCL states and SSP-RK3, so on a periodic box mass, momentum and energy are kept to round-off, and a state
that does not vary along z evolves exactly as the 2-D solver's inviscid one (tests check both).
"""

from __future__ import annotations

import numpy as np

from ._common import RngLike, as_generator, check_int, check_real, inclusive_frame_times
from .compressible_ns import GAMMA, _minmod

AXES = (1, 2, 3)


def primitives(q: np.ndarray) -> np.ndarray:
    """(rho, u, v, w, p) from conserved (rho, rho u, rho v, rho w, E), both ``[5, ...]``."""
    rho = q[0]
    vel = q[1:4] / rho
    p = (GAMMA - 1.0) * (q[4] - 0.5 * rho * np.sum(vel * vel, axis=0))
    return np.concatenate([rho[None], vel, p[None]])


def conserved(w: np.ndarray) -> np.ndarray:
    """(rho, rho u, rho v, rho w, E) from primitives (rho, u, v, w, p)."""
    rho, vel, p = w[0], w[1:4], w[4]
    energy = p / (GAMMA - 1.0) + 0.5 * rho * np.sum(vel * vel, axis=0)
    return np.concatenate([rho[None], rho * vel, energy[None]])


def _euler_flux(w: np.ndarray) -> np.ndarray:
    """Flux normal to a face whose normal velocity is component 1 of (rho, un, ut1, ut2, p)."""
    rho, un, p = w[0], w[1], w[4]
    q = conserved(w)
    return np.stack([rho * un, rho * un * un + p, rho * un * w[2], rho * un * w[3], (q[4] + p) * un])


def _hll(wl: np.ndarray, wr: np.ndarray) -> np.ndarray:
    cl, cr = np.sqrt(GAMMA * wl[4] / wl[0]), np.sqrt(GAMMA * wr[4] / wr[0])
    sl = np.minimum(wl[1] - cl, wr[1] - cr)
    sr = np.maximum(wl[1] + cl, wr[1] + cr)
    fl, fr = _euler_flux(wl), _euler_flux(wr)
    mid = (sr * fl - sl * fr + sl * sr * (conserved(wr) - conserved(wl))) / (sr - sl)
    return np.where(sl >= 0.0, fl, np.where(sr <= 0.0, fr, mid))


def _face_flux(w: np.ndarray, axis: int) -> np.ndarray:
    """Flux through the faces between cell i and i+1 along ``axis`` (1 = x, 2 = y, 3 = z), in conserved order."""
    order = [0, axis, *(a for a in AXES if a != axis), 4]  # the normal velocity first
    rot = w[order]
    right_cell = np.roll(rot, -1, axis=axis)
    slope = _minmod(rot - np.roll(rot, 1, axis=axis), right_cell - rot)
    flux = _hll(rot + 0.5 * slope, right_cell - 0.5 * np.roll(slope, -1, axis=axis))
    out = np.empty_like(flux)
    out[order] = flux  # undo the rotation
    return out


def _rhs(q: np.ndarray, h: float) -> np.ndarray:
    w = primitives(q)
    out = np.zeros_like(q)
    for axis in AXES:
        f = _face_flux(w, axis)
        out -= (f - np.roll(f, 1, axis=axis)) / h
    return out


def _max_dt(q: np.ndarray, h: float, cfl: float) -> float:
    w = primitives(q)
    c = np.sqrt(GAMMA * w[4] / w[0])
    return float(cfl * h / sum(np.max(np.abs(w[a]) + c) for a in AXES))


def smooth_random_field(n: int, rng: np.random.Generator, modes: int = 3) -> np.ndarray:
    """A periodic ``[n, n, n]`` field of random Fourier modes up to wavenumber ``modes``, max |value| = 1."""
    k = np.fft.fftfreq(n, d=1.0 / n)
    kx, ky, kz = np.meshgrid(k, k, k, indexing="ij")
    low = (np.abs(kx) <= modes) & (np.abs(ky) <= modes) & (np.abs(kz) <= modes)
    spec = (rng.standard_normal((n, n, n)) + 1j * rng.standard_normal((n, n, n))) * low
    field = np.fft.ifftn(spec).real
    return field / max(float(np.max(np.abs(field))), 1e-12)


def random_initial_state(n: int, mach: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random primitives (rho, u, v, w, p) ``[5, n, n, n]``: density and pressure within 10 % of 1, a
    velocity whose RMS speed is ``mach`` times the mean sound speed (PDEBench's M sets compressibility)."""
    rho = 1.0 + 0.1 * smooth_random_field(n, rng)
    p = 1.0 + 0.1 * smooth_random_field(n, rng)
    vel = np.stack([smooth_random_field(n, rng) for _ in range(3)])
    vel *= mach * np.sqrt(GAMMA) / np.sqrt(np.mean(np.sum(vel**2, axis=0)))
    return np.concatenate([rho[None], vel, p[None]])


def simulate_compressible_ns3d(
    n: int,
    mach: float,
    t_final: float,
    n_frames: int,
    rng: RngLike,
    cfl: float = 0.4,
    state0: np.ndarray | None = None,
) -> np.ndarray:
    """Frames ``[n_frames, n, n, n, 5]`` with PDEBench's channels (density, pressure, Vx, Vy, Vz), float64.

    Frame 0 is the initial state, frame k is at k t_final / (n_frames - 1). ``state0`` (primitives
    (rho, u, v, w, p) ``[5, n, n, n]``) replaces the random start."""
    n = check_int("n", n, minimum=4)
    mach = check_real("mach", mach, low=0.0)
    t_final = check_real("t_final", t_final, low=0.0)
    n_frames = check_int("n_frames", n_frames, minimum=2)
    cfl = check_real("cfl", cfl, low=0.0, high=1.0)
    w = random_initial_state(n, mach, as_generator(rng)) if state0 is None else np.asarray(state0, dtype=np.float64)
    q, h = conserved(w), 1.0 / n
    times = inclusive_frame_times(t_final, n_frames)
    order = [0, 4, 1, 2, 3]  # primitives (rho, u, v, w, p) -> PDEBench's (rho, p, u, v, w)
    frames = np.empty((n_frames, n, n, n, 5))
    frames[0] = np.moveaxis(w[order], 0, -1)
    t = 0.0
    for frame in range(1, n_frames):
        while t < times[frame]:
            dt = min(_max_dt(q, h, cfl), times[frame] - t)
            q1 = q + dt * _rhs(q, h)
            q2 = 0.75 * q + 0.25 * (q1 + dt * _rhs(q1, h))
            q = q / 3.0 + 2.0 / 3.0 * (q2 + dt * _rhs(q2, h))
            t = times[frame] if times[frame] - t - dt < 1e-12 * t_final else t + dt
        w = primitives(q)
        if not (np.all(np.isfinite(w)) and np.min(w[0]) > 0.0 and np.min(w[4]) > 0.0):
            raise RuntimeError(f"density or pressure lost positivity before t={times[frame]}")
        frames[frame] = np.moveaxis(w[order], 0, -1)
    return frames
