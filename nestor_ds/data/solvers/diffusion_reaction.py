"""FitzHugh-Nagumo diffusion-reaction, the PDEBench 2D DR set-up.

    u_t = Du Lap(u) + u - u^3 - k - v,     v_t = Dv Lap(v) + u - v

on [-1, 1]^2 with homogeneous Neumann walls.  Cell-centred second-order finite differences
(a mirrored ghost cell makes the wall flux exactly zero) and classical RK4 in time.  RK4 is
explicit, so the step is bounded by the diffusion and reaction eigenvalues; with the
small PDEBench diffusivities that bound is mild, and a fourth-order clock leaves the
second-order space error dominant, which is what the convergence test measures.
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
    steps_between,
)

# Where the RK4 stability region meets the negative real axis.
_RK4_REAL_LIMIT = 2.785


def _laplacian_neumann(f: np.ndarray, dx: float) -> np.ndarray:
    """Five-point Laplacian of a ``[n, n]`` field with zero normal flux at the walls."""
    g = np.pad(f, 1, mode="edge")
    return (g[2:, 1:-1] + g[:-2, 1:-1] + g[1:-1, 2:] + g[1:-1, :-2] - 4.0 * f) * (1.0 / dx**2)


def stability_limit(n: int, u_max: float, du: float = 1e-3, dv: float = 5e-3) -> float:
    """Largest stable RK4 step: the spectral radii of diffusion and reaction Jacobian add up."""
    dx = 2.0 / n
    diffusion = 8.0 * max(du, dv) / dx**2
    reaction = 2.0 + 3.0 * u_max**2  # row-sum bound on the reaction Jacobian
    return _RK4_REAL_LIMIT / (diffusion + reaction)


def simulate_diffusion_reaction(
    n: int,
    t_final: float,
    n_frames: int,
    rng: RngLike,
    dt: float | None = None,
    u0: np.ndarray | None = None,
    *,
    du: float = 1e-3,
    dv: float = 5e-3,
    k: float = 5e-3,
) -> np.ndarray:
    """Activator/inhibitor frames ``[n_frames, n, n, 2]`` (channels u, v; axis 1 is x), float64.

    Frame 0 is the initial state and frame k is at k t_final / (n_frames - 1), as in
    PDEBench.  Without ``u0`` both fields start as independent standard normals per cell
    (PDEBench's initial condition).  ``dt`` defaults to half the RK4 stability limit; it is
    shortened so that frames land exactly, and a ``dt`` above the limit is refused.
    """
    n = check_int("n", n, minimum=2)
    t_final = check_real("t_final", t_final, low=0.0)
    n_frames = check_int("n_frames", n_frames, minimum=2)
    du = check_real("du", du, low=0.0)
    dv = check_real("dv", dv, low=0.0)
    k = check_real("k", k)
    gen = as_generator(rng)
    state = gen.standard_normal((n, n, 2)) if u0 is None else check_field("u0", u0, (n, n, 2))
    state = np.ascontiguousarray(np.moveaxis(state, -1, 0))  # channels first while stepping

    limit = stability_limit(n, float(np.max(np.abs(state[0]))), du, dv)
    if dt is None:
        dt = 0.5 * limit
    else:
        dt = check_real("dt", dt, low=0.0)
        if dt > limit:
            raise UserError(f"dt={dt} exceeds the RK4 stability limit {limit:.3g} for n={n}")
    times = inclusive_frame_times(t_final, n_frames)
    steps, h = steps_between(times[1] - times[0], dt)
    dx = 2.0 / n

    def rhs(s: np.ndarray) -> np.ndarray:
        u, v = s[0], s[1]
        out = np.empty_like(s)
        out[0] = du * _laplacian_neumann(u, dx) + u - u * u * u - k - v
        out[1] = dv * _laplacian_neumann(v, dx) + u - v
        return out

    frames = np.empty((n_frames, n, n, 2))
    frames[0] = np.moveaxis(state, 0, -1)
    for frame in range(1, n_frames):
        for _ in range(steps):
            k1 = rhs(state)
            k2 = rhs(state + 0.5 * h * k1)
            k3 = rhs(state + 0.5 * h * k2)
            k4 = rhs(state + h * k3)
            state = state + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        if not np.all(np.isfinite(state)):
            raise RuntimeError(f"diffusion-reaction blew up before t={times[frame]}; lower dt")
        frames[frame] = np.moveaxis(state, 0, -1)
    return frames
