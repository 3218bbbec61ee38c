"""2-D incompressible Navier-Stokes in vorticity form, the FNO benchmark set-up.

    dw/dt + u . grad(w) = nu Lap(w) + f,    u = (dpsi/dy, -dpsi/dx),    -Lap(psi) = w

on the periodic unit square.  The solver is pseudo-spectral: every derivative is exact in
Fourier space, so the only spatial error is the 2/3-rule truncation of the quadratic term.
Diffusion is Crank-Nicolson (unconditionally stable, second order, so small viscosities do
not dictate the step) and advection plus forcing is Heun's method, matching the time
accuracy of the diffusion part.
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
    periodic_grf,
    steps_between,
)


def fno_forcing(n: int) -> np.ndarray:
    """The forcing FNO's data sets use, 0.1 (sin 2pi(x+y) + cos 2pi(x+y)), on the n x n grid."""
    x = np.arange(n) / n
    s = 2.0 * np.pi * (x[:, None] + x[None, :])
    return 0.1 * (np.sin(s) + np.cos(s))


def simulate_ns_vorticity(
    n: int,
    nu: float,
    t_final: float,
    n_frames: int,
    rng: RngLike,
    forcing: bool = True,
    w0: np.ndarray | None = None,
    dt: float = 1e-3,
) -> np.ndarray:
    """Vorticity snapshots ``[n_frames, n, n]`` (axis 1 is x, axis 2 is y), float64.

    Frame k is at time (k+1) t_final / n_frames, as in FNO's files, which leave out the
    initial state.  The internal step is the largest step <= ``dt`` that divides the frame
    interval, so frames land exactly on their times.  Without ``w0`` the initial vorticity
    is drawn from FNO's Gaussian prior 7^1.5 (-Lap + 49)^-2.5 using ``rng``.  The initial
    field is cut to the same 2/3 band as the advection term, so the discrete system is a
    Galerkin truncation: without viscosity and forcing it keeps energy and enstrophy.
    """
    n = check_int("n", n, minimum=4)
    if n % 2:
        raise UserError(f"n must be even for the 2/3-rule dealiasing, got {n}")
    nu = check_real("nu", nu, low=0.0, strict_low=False)
    t_final = check_real("t_final", t_final, low=0.0)
    n_frames = check_int("n_frames", n_frames, minimum=1)
    dt = check_real("dt", dt, low=0.0)
    gen = as_generator(rng)
    w = periodic_grf(n, gen) if w0 is None else check_field("w0", w0, (n, n))

    steps, h = steps_between(t_final / n_frames, dt)
    mx = np.fft.fftfreq(n, d=1.0 / n)  # integer wavenumbers, x along axis 0
    my = np.fft.rfftfreq(n, d=1.0 / n)
    kx = 2.0 * np.pi * mx[:, None]
    ky = 2.0 * np.pi * my[None, :]
    k2 = kx**2 + ky**2
    inv_k2 = np.divide(1.0, k2, out=np.zeros_like(k2), where=k2 > 0)
    keep = (np.abs(mx)[:, None] < n / 3.0) & (np.abs(my)[None, :] < n / 3.0)
    f_hat = np.fft.rfft2(fno_forcing(n)) if forcing else np.zeros_like(k2, dtype=complex)

    def advection(w_hat: np.ndarray) -> np.ndarray:
        psi_hat = w_hat * inv_k2
        u = np.fft.irfft2(1j * ky * psi_hat, s=(n, n))
        v = np.fft.irfft2(-1j * kx * psi_hat, s=(n, n))
        wx = np.fft.irfft2(1j * kx * w_hat, s=(n, n))
        wy = np.fft.irfft2(1j * ky * w_hat, s=(n, n))
        return -np.fft.rfft2(u * wx + v * wy) * keep

    explicit = 1.0 - 0.5 * h * nu * k2
    implicit = 1.0 / (1.0 + 0.5 * h * nu * k2)
    w_hat = np.fft.rfft2(w) * keep
    frames = np.empty((n_frames, n, n))
    for frame in range(n_frames):
        for _ in range(steps):
            n1 = advection(w_hat)
            w_pred = (explicit * w_hat + h * (f_hat + n1)) * implicit
            n2 = advection(w_pred)
            w_hat = (explicit * w_hat + h * (f_hat + 0.5 * (n1 + n2))) * implicit
        frames[frame] = np.fft.irfft2(w_hat, s=(n, n))
        if not np.all(np.isfinite(frames[frame])):
            raise RuntimeError(f"vorticity blew up before t={(frame + 1) * t_final / n_frames}; lower dt")
    return frames
