"""2-D compressible Navier-Stokes, the PDEBench CFD set-up (ideal gas, gamma = 5/3).

    rho_t + div(rho v) = 0
    (rho v)_t + div(rho v v + p I - sigma) = 0
    E_t + div((E + p) v - sigma . v) = 0,    E = p / (gamma - 1) + rho |v|^2 / 2
    sigma = eta (grad v + grad v^T - 2/3 div(v) I) + zeta div(v) I

on the periodic unit square, no heat conduction (as PDEBench).  Conservative finite volume:
every update is a difference of face fluxes, so on a periodic box mass, momentum and energy
are kept to round-off.  The inviscid flux is HLL on minmod-limited MUSCL states (robust
through the shocks that M = 1 data develop); the viscous stress is central at the faces;
SSP-RK3 keeps the limiter's non-oscillatory property in time.
"""

from __future__ import annotations

import numpy as np

from nestor_ds.errors import UserError

from ._common import (
    RngLike,
    as_generator,
    check_field,
    check_int,
    check_real,
    inclusive_frame_times,
    unit_random_field,
)

GAMMA = 5.0 / 3.0


def _minmod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(a * b > 0.0, np.where(np.abs(a) < np.abs(b), a, b), 0.0)


def primitives(q: np.ndarray) -> np.ndarray:
    """(rho, u, v, p) from conserved (rho, rho u, rho v, E), both ``[4, ...]``."""
    rho = q[0]
    u, v = q[1] / rho, q[2] / rho
    p = (GAMMA - 1.0) * (q[3] - 0.5 * rho * (u * u + v * v))
    return np.stack([rho, u, v, p])


def conserved(w: np.ndarray) -> np.ndarray:
    """(rho, rho u, rho v, E) from primitives (rho, u, v, p), both ``[4, ...]``."""
    rho, u, v, p = w
    return np.stack([rho, rho * u, rho * v, p / (GAMMA - 1.0) + 0.5 * rho * (u * u + v * v)])


def _euler_flux(w: np.ndarray) -> np.ndarray:
    """Flux normal to a face whose normal velocity is component 1 of (rho, un, ut, p)."""
    rho, un, ut, p = w
    energy = p / (GAMMA - 1.0) + 0.5 * rho * (un * un + ut * ut)
    return np.stack([rho * un, rho * un * un + p, rho * un * ut, (energy + p) * un])


def _hll(wl: np.ndarray, wr: np.ndarray) -> np.ndarray:
    cl = np.sqrt(GAMMA * wl[3] / wl[0])
    cr = np.sqrt(GAMMA * wr[3] / wr[0])
    sl = np.minimum(wl[1] - cl, wr[1] - cr)
    sr = np.maximum(wl[1] + cl, wr[1] + cr)
    fl, fr = _euler_flux(wl), _euler_flux(wr)
    ql, qr = conserved(wl), conserved(wr)
    mid = (sr * fl - sl * fr + sl * sr * (qr - ql)) / (sr - sl)
    return np.where(sl >= 0.0, fl, np.where(sr <= 0.0, fr, mid))


def _face_flux(w: np.ndarray, axis: int, h: float, eta: float, zeta: float) -> np.ndarray:
    """Total flux through the faces between cell i and i+1 along ``axis`` (1 = x, 2 = y).

    Components come back in (mass, x-momentum, y-momentum, energy) order.
    """
    normal, tangent = (1, 2) if axis == 1 else (2, 1)
    rot = w[[0, normal, tangent, 3]]
    right_cell = np.roll(rot, -1, axis=axis)
    slope = _minmod(rot - np.roll(rot, 1, axis=axis), right_cell - rot)
    left = rot + 0.5 * slope
    right = right_cell - 0.5 * np.roll(slope, -1, axis=axis)
    flux = _hll(left, right)
    # Undo the rotation: component 1 was the normal momentum.
    out = np.empty_like(flux)
    out[0], out[normal], out[tangent], out[3] = flux[0], flux[1], flux[2], flux[3]

    if eta == 0.0 and zeta == 0.0:
        return out
    along, across = axis - 1, 2 - axis  # the same axes on single ``[n, n]`` fields
    un, ut = w[normal], w[tangent]
    dn_un = (np.roll(un, -1, axis=along) - un) / h  # normal derivatives, exact at the face
    dn_ut = (np.roll(ut, -1, axis=along) - ut) / h

    def tangential(f: np.ndarray) -> np.ndarray:  # central in the cell, averaged onto the face
        d = (np.roll(f, -1, axis=across) - np.roll(f, 1, axis=across)) / (2.0 * h)
        return 0.5 * (d + np.roll(d, -1, axis=along))

    dt_un, dt_ut = tangential(un), tangential(ut)
    div = dn_un + dt_ut
    tau_nn = eta * (2.0 * dn_un - 2.0 / 3.0 * div) + zeta * div
    tau_nt = eta * (dt_un + dn_ut)
    un_f = 0.5 * (un + np.roll(un, -1, axis=along))
    ut_f = 0.5 * (ut + np.roll(ut, -1, axis=along))
    out[normal] -= tau_nn
    out[tangent] -= tau_nt
    out[3] -= un_f * tau_nn + ut_f * tau_nt
    return out


def _rhs(q: np.ndarray, h: float, eta: float, zeta: float) -> np.ndarray:
    w = primitives(q)
    out = np.zeros_like(q)
    for axis in (1, 2):
        f = _face_flux(w, axis, h, eta, zeta)
        out -= (f - np.roll(f, 1, axis=axis)) / h
    return out


def _max_dt(q: np.ndarray, h: float, eta: float, zeta: float, cfl: float) -> float:
    rho, u, v, p = primitives(q)
    c = np.sqrt(GAMMA * p / rho)
    dt = cfl * h / (np.max(np.abs(u) + c) + np.max(np.abs(v) + c))
    nu = (4.0 / 3.0 * eta + zeta) / np.min(rho)
    if nu > 0.0:
        dt = min(dt, 0.2 * h * h / nu)
    return float(dt)


def random_initial_state(n: int, mach: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random primitives (rho, u, v, p) ``[4, n, n]``.

    Density and pressure vary by up to 10 % around 1; the velocity is a random field whose
    RMS speed is ``mach`` times the mean sound speed sqrt(gamma), so ``mach`` sets the
    compressibility as PDEBench's M does.
    """
    rho = 1.0 + 0.1 * unit_random_field(n, rng)
    p = 1.0 + 0.1 * unit_random_field(n, rng)
    vel = np.stack([unit_random_field(n, rng), unit_random_field(n, rng)])
    rms = np.sqrt(np.mean(np.sum(vel**2, axis=0)))
    vel *= mach * np.sqrt(GAMMA) / rms
    return np.stack([rho, vel[0], vel[1], p])


def simulate_compressible_ns(
    n: int,
    mach: float,
    eta: float,
    zeta: float,
    t_final: float,
    n_frames: int,
    rng: RngLike,
    cfl: float = 0.4,
    state0: np.ndarray | None = None,
) -> np.ndarray:
    """Frames ``[n_frames, n, n, 4]`` with channels (density, pressure, Vx, Vy), float64.

    Channel order is PDEBench's; axis 1 is x.  Frame 0 is the initial state and frame k is
    at k t_final / (n_frames - 1).  The step follows the acoustic CFL number ``cfl`` and
    the explicit viscous limit, shortened so frames land exactly.  ``state0`` (same
    channels, ``[n, n, 4]``) replaces the random start, e.g. for exact-solution tests;
    ``mach`` then only has to be valid.
    """
    n = check_int("n", n, minimum=4)
    mach = check_real("mach", mach, low=0.0)
    eta = check_real("eta", eta, low=0.0, strict_low=False)
    zeta = check_real("zeta", zeta, low=0.0, strict_low=False)
    t_final = check_real("t_final", t_final, low=0.0)
    n_frames = check_int("n_frames", n_frames, minimum=2)
    cfl = check_real("cfl", cfl, low=0.0, high=1.0)
    gen = as_generator(rng)

    h = 1.0 / n
    if state0 is None:
        w = random_initial_state(n, mach, gen)
    else:
        rho, p, u, v = np.moveaxis(check_field("state0", state0, (n, n, 4)), -1, 0)
        if np.min(rho) <= 0.0 or np.min(p) <= 0.0:
            raise UserError("state0 must have positive density and pressure")
        w = np.stack([rho, u, v, p])
    q = conserved(w)
    times = inclusive_frame_times(t_final, n_frames)
    frames = np.empty((n_frames, n, n, 4))
    order = [0, 3, 1, 2]  # primitives are (rho, u, v, p); PDEBench stores (rho, p, u, v)
    frames[0] = np.moveaxis(w[order], 0, -1)
    t = 0.0
    for frame in range(1, n_frames):
        while t < times[frame]:
            dt = min(_max_dt(q, h, eta, zeta, cfl), times[frame] - t)
            q1 = q + dt * _rhs(q, h, eta, zeta)
            q2 = 0.75 * q + 0.25 * (q1 + dt * _rhs(q1, h, eta, zeta))
            q = q / 3.0 + 2.0 / 3.0 * (q2 + dt * _rhs(q2, h, eta, zeta))
            t = times[frame] if times[frame] - t - dt < 1e-12 * t_final else t + dt
        w = primitives(q)
        if not (np.all(np.isfinite(w)) and np.min(w[0]) > 0.0 and np.min(w[3]) > 0.0):
            raise RuntimeError(f"density or pressure lost positivity before t={times[frame]}")
        frames[frame] = np.moveaxis(w[order], 0, -1)
    return frames
