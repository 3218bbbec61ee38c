"""2-D shallow-water equations, the PDEBench radial dam break (``2D_rdb_NA_NA``).

    h_t + (hu)_x + (hv)_y = 0
    (hu)_t + (hu^2 + g h^2 / 2)_x + (huv)_y = 0
    (hv)_t + (huv)_x + (hv^2 + g h^2 / 2)_y = 0

on [-2.5, 2.5]^2 over a flat bottom.  Finite volume, so mass is conserved to round-off;
MUSCL reconstruction of (h, u, v) with the minmod limiter keeps face depths between their
neighbours' (hence positive) while giving second order in smooth regions; the HLL flux is
positivity-preserving under the CFL bound used here, and SSP-RK2 keeps both properties.
At a reflective wall the mirrored ghost state makes the HLL mass flux vanish exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nestor_ds.errors import UserError

from ._common import RngLike, as_generator, check_field, check_int, check_real, inclusive_frame_times

GRAVITY = 1.0
DOMAIN = (-2.5, 2.5)
_BOUNDARIES = ("reflective", "transmissive", "periodic")


@dataclass
class ShallowWaterRun:
    """Everything a test needs to check conservation and positivity, not just the frames."""

    state: np.ndarray  # [n_frames, n, n, 3]: h, hu, hv
    times: np.ndarray  # [n_frames]
    dx: float
    min_depth: float  # smallest depth of any cell at any stage of any step
    n_steps: int
    radius: float


def _minmod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(a * b > 0.0, np.where(np.abs(a) < np.abs(b), a, b), 0.0)


def _pad(q: np.ndarray, boundary: str) -> np.ndarray:
    """Two ghost layers on the spatial axes of ``[3, n, n]`` primitives (h, u, v)."""
    g = np.pad(q, ((0, 0), (2, 2), (2, 2)), mode="wrap" if boundary == "periodic" else "symmetric")
    if boundary == "reflective":  # mirror image: normal velocity changes sign
        g[1, :2] *= -1.0
        g[1, -2:] *= -1.0
        g[2, :, :2] *= -1.0
        g[2, :, -2:] *= -1.0
    return g


def _hll(left: np.ndarray, right: np.ndarray, g: float) -> np.ndarray:
    """HLL flux across faces whose normal is the first velocity component of (h, un, ut)."""
    hl, ul, tl = left
    hr, ur, tr = right
    cl, cr = np.sqrt(g * hl), np.sqrt(g * hr)
    sl = np.minimum(ul - cl, ur - cr)
    sr = np.maximum(ul + cl, ur + cr)
    ql = np.stack([hl, hl * ul, hl * tl])
    qr = np.stack([hr, hr * ur, hr * tr])
    fl = np.stack([hl * ul, hl * ul * ul + 0.5 * g * hl * hl, hl * ul * tl])
    fr = np.stack([hr * ur, hr * ur * ur + 0.5 * g * hr * hr, hr * ur * tr])
    mid = (sr * fl - sl * fr + sl * sr * (qr - ql)) / (sr - sl)
    return np.where(sl >= 0.0, fl, np.where(sr <= 0.0, fr, mid))


def _rhs(q: np.ndarray, dx: float, boundary: str, g: float) -> np.ndarray:
    """-div F for conserved ``[3, n, n]``; faces in x and y use the same 1-D routine."""
    h = q[0]
    prim = np.stack([h, q[1] / h, q[2] / h])
    p = _pad(prim, boundary)
    out = np.zeros_like(q)
    for axis, (normal, tangent) in ((1, (1, 2)), (2, (2, 1))):
        # Rotate so the face-normal velocity is component 1, the tangential one component 2.
        w = p[[0, normal, tangent]]
        other = slice(2, -2)
        w = w[:, :, other] if axis == 1 else w[:, other, :]
        w = np.moveaxis(w, axis, 1)  # [3, n + 4, n] with the sweep along axis 1
        slope = _minmod(w[:, 1:-1] - w[:, :-2], w[:, 2:] - w[:, 1:-1])  # cells 1 .. n+2
        left = w[:, 1:-2] + 0.5 * slope[:, :-1]  # faces between cells 1|2 ... n+1|n+2
        right = w[:, 2:-1] - 0.5 * slope[:, 1:]
        flux = _hll(left, right, g)  # n + 1 faces, the first and last on the walls
        div = (flux[:, 1:] - flux[:, :-1]) / dx
        div = np.moveaxis(div, 1, axis)
        out[0] -= div[0]
        out[normal] -= div[1]
        out[tangent] -= div[2]
    return out


def _max_dt(q: np.ndarray, dx: float, g: float, cfl: float) -> float:
    h = q[0]
    c = np.sqrt(g * h)
    sx = np.max(np.abs(q[1] / h) + c)
    sy = np.max(np.abs(q[2] / h) + c)
    return cfl * dx / (sx + sy)


def run_shallow_water(
    n: int | tuple[int, int],
    t_final: float,
    n_frames: int,
    rng: RngLike,
    boundary: str = "reflective",
    cfl: float = 0.4,
    h0: np.ndarray | None = None,
) -> ShallowWaterRun:
    """The full conserved state (h, hu, hv) at each frame, plus positivity diagnostics.

    ``n`` is the grid edge, or ``(nx, ny)`` for a rectangle: x spans ``DOMAIN``, y as many cells of the same
    size, centred on 0. ``h0`` (optional) is the initial depth, at rest; default PDEBench's circular dam."""
    if isinstance(n, (tuple, list)) and len(n) == 2:
        nx, ny = check_int("n[0]", n[0], minimum=4), check_int("n[1]", n[1], minimum=4)
    else:
        nx = ny = check_int("n", n, minimum=4)
    t_final = check_real("t_final", t_final, low=0.0)
    n_frames = check_int("n_frames", n_frames, minimum=2)
    cfl = check_real("cfl", cfl, low=0.0, high=0.5)
    if boundary not in _BOUNDARIES:
        raise UserError(f"boundary must be one of {_BOUNDARIES}, got {boundary!r}")
    gen = as_generator(rng)
    radius = float(gen.uniform(0.3, 0.7))

    lo, hi = DOMAIN
    dx = (hi - lo) / nx
    x = lo + (np.arange(nx) + 0.5) * dx
    y = (np.arange(ny) + 0.5 - ny / 2) * dx
    r = np.hypot(x[:, None], y[None, :])
    q = np.zeros((3, nx, ny))
    q[0] = np.where(r < radius, 2.0, 1.0) if h0 is None else check_field("h0", h0, (nx, ny))
    if not q[0].min() > 0.0:
        raise UserError(f"h0 must be positive everywhere, got a minimum of {q[0].min()}")

    times = inclusive_frame_times(t_final, n_frames)
    state = np.empty((n_frames, nx, ny, 3))
    state[0] = np.moveaxis(q, 0, -1)
    t, steps, min_depth = 0.0, 0, float(q[0].min())
    for frame in range(1, n_frames):
        while t < times[frame]:
            dt = min(_max_dt(q, dx, GRAVITY, cfl), times[frame] - t)
            q1 = q + dt * _rhs(q, dx, boundary, GRAVITY)
            min_depth = min(min_depth, float(q1[0].min()))
            if not min_depth > 0.0:
                raise RuntimeError(f"depth lost positivity at t={t}")
            q = 0.5 * (q + q1 + dt * _rhs(q1, dx, boundary, GRAVITY))
            min_depth = min(min_depth, float(q[0].min()))
            if not min_depth > 0.0:
                raise RuntimeError(f"depth lost positivity at t={t}")
            t = times[frame] if times[frame] - t - dt < 1e-12 * t_final else t + dt
            steps += 1
        state[frame] = np.moveaxis(q, 0, -1)
    return ShallowWaterRun(state=state, times=times, dx=dx, min_depth=min_depth, n_steps=steps, radius=radius)


def simulate_shallow_water(
    n: int,
    t_final: float,
    n_frames: int,
    rng: RngLike,
    boundary: str = "reflective",
) -> np.ndarray:
    """Water depth frames ``[n_frames, n, n, 1]`` (axis 1 is x), float64.

    Frame 0 is the dam at rest (h = 2 inside a circle of radius drawn from U[0.3, 0.7]
    about the origin, 1 outside) and frame k is at k t_final / (n_frames - 1), as in
    PDEBench, which stores only h.  ``boundary`` is "reflective" (closed walls, mass
    conserved) or "transmissive" (zero-gradient, waves leave the box).
    """
    return run_shallow_water(n, t_final, n_frames, rng, boundary).state[..., :1].copy()
