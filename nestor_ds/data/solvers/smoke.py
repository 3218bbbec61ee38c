"""Buoyancy-driven smoke in a closed box, like PDEArena's NavierStokes-2D (phiflow) data.

Incompressible, inviscid apart from the numerical diffusion of the advection:

    v_t + (v . grad) v = -grad p + (0, b s),    div v = 0,    s_t + v . grad s = source

on a square box [0, L]^2 with free-slip solid walls.  Velocity lives on a staggered (MAC)
grid, so the divergence and the pressure gradient are compact and their composition is the
five-point Laplacian with Neumann walls.  That Laplacian is diagonal in the DCT-II basis,
so the pressure projection is an exact fast Poisson solve (no iterations, no tolerance):
after it, the discrete divergence is zero to round-off.  Smoke and velocity are advected
semi-Lagrangian (second-order back-trace, bilinear sampling), which is stable for any
step; the step still follows a CFL number for accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.fft import dctn, idctn
from scipy.ndimage import map_coordinates

from ._common import RngLike, as_generator, check_int, check_real, inclusive_frame_times


@dataclass
class SmokeRun:
    """Frames plus the divergence left after every projection (relative to the velocity gradient)."""

    frames: np.ndarray  # [n_frames, n, n, 3]: smoke, vx, vy at cell centres
    relative_divergence: np.ndarray  # [n_steps] max |div v| / max |grad v| after each projection
    n_steps: int
    source_center: tuple[float, float]


def _sample(field: np.ndarray, x: np.ndarray, y: np.ndarray, offset: tuple[float, float], h: float) -> np.ndarray:
    """Bilinear value at physical points of a field stored at ((i + ox) h, (j + oy) h)."""
    coords = np.stack([x / h - offset[0], y / h - offset[1]])
    return map_coordinates(field, coords, order=1, mode="nearest")


class _StaggeredBox:
    """MAC grid geometry, operators and the DCT Poisson solve for a closed n x n box."""

    def __init__(self, n: int, length: float) -> None:
        self.n, self.h = n, length / n
        c = (np.arange(n) + 0.5) * self.h
        f = np.arange(n + 1) * self.h
        self.centres = np.meshgrid(c, c, indexing="ij")
        self.xfaces = np.meshgrid(f, c, indexing="ij")  # where vx lives, [n + 1, n]
        self.yfaces = np.meshgrid(c, f, indexing="ij")  # where vy lives, [n, n + 1]
        lam = (2.0 * np.cos(np.pi * np.arange(n) / n) - 2.0) / self.h**2
        eig = lam[:, None] + lam[None, :]
        eig[0, 0] = 1.0  # the constant mode: pressure is defined up to a constant
        self.inv_eig = 1.0 / eig
        self.inv_eig[0, 0] = 0.0

    def divergence(self, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
        return (vx[1:] - vx[:-1] + vy[:, 1:] - vy[:, :-1]) / self.h

    def project(self, vx: np.ndarray, vy: np.ndarray) -> None:
        """Remove the gradient part in place; wall-normal velocities are zero on entry and exit."""
        p = idctn(dctn(self.divergence(vx, vy), type=2, norm="ortho") * self.inv_eig, type=2, norm="ortho")
        vx[1:-1] -= (p[1:] - p[:-1]) / self.h
        vy[:, 1:-1] -= (p[:, 1:] - p[:, :-1]) / self.h

    def gradient_scale(self, vx: np.ndarray, vy: np.ndarray) -> float:
        h = self.h
        return float(
            max(
                np.abs(np.diff(vx, axis=0)).max(),
                np.abs(np.diff(vx, axis=1)).max(),
                np.abs(np.diff(vy, axis=0)).max(),
                np.abs(np.diff(vy, axis=1)).max(),
            )
            / h
        )

    def velocity_at(
        self, vx: np.ndarray, vy: np.ndarray, x: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        return _sample(vx, x, y, (0.0, 0.5), self.h), _sample(vy, x, y, (0.5, 0.0), self.h)

    def departure(
        self, vx: np.ndarray, vy: np.ndarray, x: np.ndarray, y: np.ndarray, dt: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Midpoint back-trace: where the fluid now at (x, y) was dt ago."""
        u, v = self.velocity_at(vx, vy, x, y)
        um, vm = self.velocity_at(vx, vy, x - 0.5 * dt * u, y - 0.5 * dt * v)
        return x - dt * um, y - dt * vm


def run_smoke(
    n: int,
    buoyancy: float,
    t_final: float,
    n_frames: int,
    rng: RngLike,
    length: float = 32.0,
    cfl: float = 1.0,
    inflow_rate: float = 0.2,
) -> SmokeRun:
    """The smoke frames with the post-projection divergence of every step."""
    n = check_int("n", n, minimum=4)
    buoyancy = check_real("buoyancy", buoyancy, low=0.0, strict_low=False)
    t_final = check_real("t_final", t_final, low=0.0)
    n_frames = check_int("n_frames", n_frames, minimum=2)
    length = check_real("length", length, low=0.0)
    cfl = check_real("cfl", cfl, low=0.0)
    inflow_rate = check_real("inflow_rate", inflow_rate, low=0.0, strict_low=False)
    gen = as_generator(rng)

    box = _StaggeredBox(n, length)
    h = box.h
    cx, cy = box.centres
    # A disc-shaped source low in the box at a random horizontal position; a faint
    # random smoke field breaks the symmetry the way PDEArena's noisy start does.
    source = (float(gen.uniform(0.3, 0.7)) * length, 0.1 * length)
    radius = 0.08 * length
    inflow = inflow_rate * (np.hypot(cx - source[0], cy - source[1]) < radius)
    smoke = 0.05 * gen.random((n, n))
    vx = np.zeros((n + 1, n))
    vy = np.zeros((n, n + 1))

    def centred() -> np.ndarray:
        return np.stack([smoke, 0.5 * (vx[1:] + vx[:-1]), 0.5 * (vy[:, 1:] + vy[:, :-1])], axis=-1)

    times = inclusive_frame_times(t_final, n_frames)
    frames = np.empty((n_frames, n, n, 3))
    frames[0] = centred()
    divergence: list[float] = []
    t = 0.0
    for frame in range(1, n_frames):
        while t < times[frame]:
            speed = max(np.abs(vx).max(), np.abs(vy).max())
            dt = times[frame] - t
            if speed > 0.0:
                dt = min(dt, cfl * h / speed)
            # Advect smoke and both velocity components with the same (old) velocity.
            smoke = _sample(smoke, *box.departure(vx, vy, cx, cy, dt), (0.5, 0.5), h) + dt * inflow
            new_vx = _sample(vx, *box.departure(vx, vy, box.xfaces[0], box.xfaces[1], dt), (0.0, 0.5), h)
            new_vy = _sample(vy, *box.departure(vx, vy, box.yfaces[0], box.yfaces[1], dt), (0.5, 0.0), h)
            vx, vy = new_vx, new_vy
            vy[:, 1:-1] += dt * buoyancy * 0.5 * (smoke[:, 1:] + smoke[:, :-1])
            vx[0], vx[-1] = 0.0, 0.0  # solid walls: no flow through them
            vy[:, 0], vy[:, -1] = 0.0, 0.0
            box.project(vx, vy)
            scale = box.gradient_scale(vx, vy)
            divergence.append(float(np.abs(box.divergence(vx, vy)).max() / scale) if scale > 0 else 0.0)
            t = times[frame] if times[frame] - t - dt < 1e-12 * t_final else t + dt
        if not np.all(np.isfinite(vx)) or not np.all(np.isfinite(vy)):
            raise RuntimeError(f"smoke velocity blew up before t={times[frame]}")
        frames[frame] = centred()
    return SmokeRun(
        frames=frames, relative_divergence=np.array(divergence), n_steps=len(divergence), source_center=source
    )


def simulate_smoke(
    n: int,
    buoyancy: float,
    t_final: float,
    n_frames: int,
    rng: RngLike,
) -> np.ndarray:
    """Frames ``[n_frames, n, n, 3]`` with channels (smoke u, vx, vy) at cell centres, float64.

    Axis 1 is x, axis 2 is y (up, against gravity).  The box is 32 x 32 like PDEArena's;
    PDEArena's conditional set varies ``buoyancy`` in [0.2, 0.5].  Frame 0 is the initial
    state and frame k is at k t_final / (n_frames - 1); ``rng`` places the inflow and draws
    the faint initial smoke.
    """
    return run_smoke(n, buoyancy, t_final, n_frames, rng).frames
