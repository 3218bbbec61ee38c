"""Lid-driven cavity flow, the CFDBench cavity problem, optionally around an obstacle.

Incompressible Navier-Stokes on the unit square, the top wall sliding at ``lid_velocity``
and the other walls at rest (Re = lid_velocity / nu for the unit side).  Chorin projection
on a staggered (MAC) grid: explicit advection (central blended with donor-cell upwinding
just enough to stay bounded, as in Griebel et al.) and explicit diffusion give a provisional
velocity; a Poisson solve then makes it discretely divergence-free.  The Poisson matrix is
the exact product of the discrete divergence and gradient restricted to fluid cells, so
the projected field's divergence is zero to the accuracy of the sparse LU solve.  An
obstacle is a block of solid cells with every face touching it held at zero velocity
(a staircase no-slip wall).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import factorized

from nestor_ds.errors import UserError

from ._common import RngLike, as_generator, check_int, check_real, inclusive_frame_times


def random_obstacle(n: int, rng: np.random.Generator) -> np.ndarray:
    """Fluid mask ``[n, n]`` (1 fluid, 0 solid) with a random rectangle or disc in the middle.

    The obstacle stays clear of the walls by at least a fifth of the box, so the fluid
    region is connected and the lid-driven vortex still forms around it.
    """
    c = (np.arange(n) + 0.5) / n
    x, y = np.meshgrid(c, c, indexing="ij")
    cx, cy = rng.uniform(0.4, 0.6, size=2)
    if rng.random() < 0.5:
        hx, hy = rng.uniform(0.05, 0.15, size=2)
        solid = (np.abs(x - cx) < hx) & (np.abs(y - cy) < hy)
    else:
        solid = np.hypot(x - cx, y - cy) < rng.uniform(0.05, 0.15)
    if not solid.any():  # a coarse grid can miss a small obstacle: keep at least one cell
        solid[int(cx * n), int(cy * n)] = True
    return (~solid).astype(np.float32)


class _Cavity:
    """MAC grid with no-slip walls: vx is ``[n + 1, n]`` on x-faces, vy ``[n, n + 1]`` on y-faces."""

    def __init__(self, n: int, fluid: np.ndarray) -> None:
        self.n, self.h = n, 1.0 / n
        solid = fluid == 0
        # A face is free (updated, corrected by the pressure) only between two fluid cells.
        self.free_x = np.zeros((n + 1, n), dtype=bool)
        self.free_x[1:-1] = ~solid[1:] & ~solid[:-1]
        self.free_y = np.zeros((n, n + 1), dtype=bool)
        self.free_y[:, 1:-1] = ~solid[:, 1:] & ~solid[:, :-1]
        self.fluid = ~solid.ravel()

        # Divergence as a sparse map from face values to cell values.
        cells = np.arange(n * n).reshape(n, n)
        ix = np.arange((n + 1) * n).reshape(n + 1, n)
        iy = np.arange(n * (n + 1)).reshape(n, n + 1)
        rows = np.concatenate([cells.ravel()] * 4)
        cols = np.concatenate(
            [ix[1:].ravel(), ix[:-1].ravel(), (n + 1) * n + iy[:, 1:].ravel(), (n + 1) * n + iy[:, :-1].ravel()]
        )
        vals = np.concatenate([np.ones(n * n), -np.ones(n * n), np.ones(n * n), -np.ones(n * n)]) / self.h
        div = sp.csr_matrix((vals, (rows, cols)), shape=(n * n, 2 * n * (n + 1)))
        self.div = div[self.fluid]  # rows of fluid cells only
        free = np.concatenate([self.free_x.ravel(), self.free_y.ravel()]).astype(float)
        # grad p on free faces is -div^T p; div diag(free) grad = -(div diag(free) div^T).
        self.grad = -(sp.diags(free) @ self.div.T).tocsr()
        poisson = (self.div @ sp.diags(free) @ self.div.T).tocsc()  # positive semi-definite
        # Pressure is defined up to a constant: pinning it by a rank-one term keeps the
        # matrix SPD, and (the right side summing to zero) leaves the solution exact.
        pin = sp.csc_matrix(([1.0 / self.h**2], ([0], [0])), shape=poisson.shape)
        self.solve = factorized((poisson + pin).tocsc())

    def divergence(self, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
        """Divergence on fluid cells, the same operator the projection inverts."""
        return self.div @ np.concatenate([vx.ravel(), vy.ravel()])

    def project(self, vx: np.ndarray, vy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.solve(-self.divergence(vx, vy))
        corr = np.concatenate([vx.ravel(), vy.ravel()]) - self.grad @ p
        m = (self.n + 1) * self.n
        return corr[:m].reshape(vx.shape), corr[m:].reshape(vy.shape)


def _tendencies(
    vx: np.ndarray, vy: np.ndarray, lid: float, nu: float, h: float, gamma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Advection + diffusion of vx on interior x-faces and of vy on interior y-faces.

    Ghost values mirror the walls so that the wall velocity (0, or the lid's) is met
    halfway between the ghost and the first interior value.
    """
    # vx with a ghost row below (no slip) and above (lid): [n + 1, n + 2]
    ux = np.concatenate([-vx[:, :1], vx, 2.0 * lid - vx[:, -1:]], axis=1)
    # vy with a ghost column left and right (no slip): [n + 2, n + 1]
    vyg = np.concatenate([-vy[:1], vy, -vy[-1:]], axis=0)

    # d(vx vx)/dx at x-faces 1..n-1 via cell-centre fluxes (cells 0..n-1)
    uc = 0.5 * (vx[1:] + vx[:-1])
    fxx = uc * uc + gamma * np.abs(uc) * 0.5 * (vx[:-1] - vx[1:])
    duu_dx = (fxx[1:] - fxx[:-1]) / h
    # d(vx vy)/dy at x-faces via corner fluxes (corners at x = i h, y = j h, j = 0..n)
    vcorner = 0.5 * (vy[:-1] + vy[1:])  # [n - 1, n + 1], x-faces 1..n-1
    below, above = ux[1:-1, :-1], ux[1:-1, 1:]
    fxy = vcorner * 0.5 * (below + above) + gamma * np.abs(vcorner) * 0.5 * (below - above)
    duv_dy = (fxy[:, 1:] - fxy[:, :-1]) / h
    lap_u = (vx[2:] + vx[:-2] + ux[1:-1, 2:] + ux[1:-1, :-2] - 4.0 * vx[1:-1]) / h**2
    ru = -duu_dx - duv_dy + nu * lap_u

    # d(vy vy)/dy at y-faces 1..n-1 via cell-centre fluxes
    vc = 0.5 * (vy[:, 1:] + vy[:, :-1])
    fyy = vc * vc + gamma * np.abs(vc) * 0.5 * (vy[:, :-1] - vy[:, 1:])
    dvv_dy = (fyy[:, 1:] - fyy[:, :-1]) / h
    # d(vx vy)/dx at y-faces via corner fluxes (corners i = 0..n)
    ucorner = 0.5 * (vx[:, :-1] + vx[:, 1:])  # [n + 1, n - 1], y-faces 1..n-1
    left, right = vyg[:-1, 1:-1], vyg[1:, 1:-1]
    fyx = ucorner * 0.5 * (left + right) + gamma * np.abs(ucorner) * 0.5 * (left - right)
    duv_dx = (fyx[1:] - fyx[:-1]) / h
    lap_v = (vyg[2:, 1:-1] + vyg[:-2, 1:-1] + vy[:, 2:] + vy[:, :-2] - 4.0 * vy[:, 1:-1]) / h**2
    rv = -dvv_dy - duv_dx + nu * lap_v
    return ru, rv


def run_cavity(
    n: int,
    lid_velocity: float,
    nu: float,
    t_final: float,
    n_frames: int,
    rng: RngLike,
    obstacle: bool | np.ndarray = False,
    safety: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Everything the tests look at, not just what a data set stores.

    A 5-tuple: frames ``[n_frames, n, n, 2]``, mask ``[n, n]``, final vx
    ``[n + 1, n]``, final vy ``[n, n + 1]`` and the max |div| after every projection
    relative to lid_velocity / h.
    """
    n = check_int("n", n, minimum=4)
    lid_velocity = check_real("lid_velocity", lid_velocity, low=0.0)
    nu = check_real("nu", nu, low=0.0)
    t_final = check_real("t_final", t_final, low=0.0)
    n_frames = check_int("n_frames", n_frames, minimum=2)
    safety = check_real("safety", safety, low=0.0, high=1.0)
    gen = as_generator(rng)

    if isinstance(obstacle, np.ndarray):  # a given fluid mask [n, n] (1 fluid, 0 solid)
        if obstacle.shape != (n, n):
            raise UserError(f"obstacle mask must be [{n}, {n}], got {obstacle.shape}")
        mask = obstacle.astype(np.float32)
    else:
        mask = random_obstacle(n, gen) if obstacle else np.ones((n, n), dtype=np.float32)
    grid = _Cavity(n, mask)
    h = grid.h
    vx = np.zeros((n + 1, n))
    vy = np.zeros((n, n + 1))

    def centred() -> np.ndarray:
        return np.stack([0.5 * (vx[1:] + vx[:-1]), 0.5 * (vy[:, 1:] + vy[:, :-1])], axis=-1)

    times = inclusive_frame_times(t_final, n_frames)
    frames = np.empty((n_frames, n, n, 2))
    frames[0] = centred()
    divergence: list[float] = []
    dt_visc = h * h / (4.0 * nu)
    t = 0.0
    for frame in range(1, n_frames):
        while t < times[frame]:
            speed = max(np.abs(vx).max(), np.abs(vy).max(), lid_velocity)
            dt = min(safety * min(dt_visc, h / speed), times[frame] - t)
            gamma = min(1.0, 1.2 * speed * dt / h)  # enough upwinding to stay bounded
            ru, rv = _tendencies(vx, vy, lid_velocity, nu, h, gamma)
            vx[1:-1] += dt * ru
            vy[:, 1:-1] += dt * rv
            vx[~grid.free_x] = 0.0
            vy[~grid.free_y] = 0.0
            vx, vy = grid.project(vx, vy)
            divergence.append(float(np.abs(grid.divergence(vx, vy)).max() * h / lid_velocity))
            t = times[frame] if times[frame] - t - dt < 1e-12 * t_final else t + dt
        if not np.all(np.isfinite(vx)) or not np.all(np.isfinite(vy)):
            raise RuntimeError(f"cavity flow blew up before t={times[frame]}")
        frames[frame] = centred()
    return frames, mask, vx, vy, np.array(divergence)


def simulate_cavity(
    n: int,
    lid_velocity: float,
    nu: float,
    t_final: float,
    n_frames: int,
    rng: RngLike,
    obstacle: bool | np.ndarray = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(frames ``[n_frames, n, n, 2]`` with channels (u, v) at cell centres, mask ``[n, n]``).

    The cavity is the unit square, axis 1 is x and axis 2 is y with the lid at y = 1 moving
    in +x.  Frame 0 is the fluid at rest and frame k is at k t_final / (n_frames - 1).
    The mask is float32, 1 on fluid cells and 0 inside the obstacle; ``rng`` only places
    the obstacle (``obstacle`` may also be a given fluid mask).
    """
    frames, mask, _, _, _ = run_cavity(n, lid_velocity, nu, t_final, n_frames, rng, obstacle)
    return frames, mask
