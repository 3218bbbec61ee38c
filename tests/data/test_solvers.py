"""Each data-generating solver against a property its physics guarantees.

Every test runs on a small grid for a short time; the quantities measured are printed
(``pytest -s``) so a regression shows by how much, not just that it failed.
"""

from __future__ import annotations

import numpy as np
import pytest

from nestor_ds.data.solvers import (
    simulate_cavity,
    simulate_compressible_ns,
    simulate_compressible_ns3d,
    simulate_diffusion_reaction,
    simulate_ns_vorticity,
    simulate_shallow_water,
    simulate_smoke,
)
from nestor_ds.data.solvers._common import periodic_grf
from nestor_ds.data.solvers.cavity import run_cavity
from nestor_ds.data.solvers.compressible_ns import GAMMA
from nestor_ds.data.solvers.ns_vorticity import fno_forcing
from nestor_ds.data.solvers.shallow_water import run_shallow_water
from nestor_ds.data.solvers.smoke import _StaggeredBox, run_smoke


def _unit_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(n) / n
    return np.meshgrid(x, x, indexing="ij")


# --------------------------------------------------------------------------- NS vorticity


def test_ns_taylor_green_decays_at_viscous_rate() -> None:
    n, nu, m, t_final, n_frames = 32, 1e-3, 2, 1.0, 4
    x, y = _unit_grid(n)
    mode = np.cos(2 * np.pi * m * x) * np.cos(2 * np.pi * m * y)
    frames = simulate_ns_vorticity(n, nu, t_final, n_frames, rng=0, forcing=False, w0=mode)
    times = t_final * np.arange(1, n_frames + 1) / n_frames
    amplitude = (frames * mode).sum(axis=(1, 2)) / (mode**2).sum()
    exact = np.exp(-2 * nu * (2 * np.pi * m) ** 2 * times)
    rel_err = np.abs(amplitude / exact - 1).max()
    leak = np.abs(frames - amplitude[:, None, None] * mode).max()
    print(f"Taylor-Green decay: relative amplitude error {rel_err:.2e}, off-mode residue {leak:.1e}")
    assert rel_err < 1e-2
    assert leak < 1e-8


def test_ns_forced_mode_approaches_its_steady_state() -> None:
    # The FNO forcing is a single-|k| shell, so w = f (1 - exp(-nu k^2 t)) / (nu k^2) is exact.
    n, nu, t_final = 32, 1e-3, 1.0
    frames = simulate_ns_vorticity(n, nu, t_final, 4, rng=0, forcing=True, w0=np.zeros((n, n)))
    k2 = 2 * (2 * np.pi) ** 2
    times = t_final * np.arange(1, 5) / 4
    exact = fno_forcing(n)[None] * ((1 - np.exp(-nu * k2 * times)) / (nu * k2))[:, None, None]
    rel_err = np.abs(frames - exact).max() / np.abs(exact).max()
    print(f"forced single mode: relative error {rel_err:.2e}")
    assert rel_err < 1e-2


def test_ns_inviscid_truncation_keeps_energy_and_enstrophy() -> None:
    # Checks the advection term: a wrong sign or a non-solenoidal velocity breaks both invariants.
    n = 32
    w0 = periodic_grf(n, np.random.default_rng(1))
    w0 *= 5.0 / np.abs(w0).max()
    frames = simulate_ns_vorticity(n, 0.0, 1.0, 5, rng=0, forcing=False, w0=w0, dt=2e-3)
    m = np.fft.fftfreq(n, d=1.0 / n)
    k2 = (2 * np.pi) ** 2 * (m[:, None] ** 2 + m[None, :] ** 2)
    k2[0, 0] = np.inf
    energy = (np.abs(np.fft.fft2(frames)) ** 2 / k2).sum(axis=(1, 2))
    enstrophy = (frames**2).sum(axis=(1, 2))
    e_drift = np.abs(energy / energy[0] - 1).max()
    z_drift = np.abs(enstrophy / enstrophy[0] - 1).max()
    moved = np.abs(frames[-1] - frames[0]).max() / np.abs(frames[0]).max()
    print(f"inviscid invariants: energy drift {e_drift:.1e}, enstrophy drift {z_drift:.1e}, change {moved:.2f}")
    assert moved > 0.3  # the flow really evolved nonlinearly
    assert e_drift < 1e-5 and z_drift < 1e-5


def test_ns_random_start_frames_and_determinism() -> None:
    a = simulate_ns_vorticity(16, 1e-3, 0.1, 2, rng=np.random.default_rng(3))
    b = simulate_ns_vorticity(16, 1e-3, 0.1, 2, rng=np.random.default_rng(3))
    c = simulate_ns_vorticity(16, 1e-3, 0.1, 2, rng=np.random.default_rng(4))
    first = simulate_ns_vorticity(16, 1e-3, 0.05, 1, rng=np.random.default_rng(3))
    assert a.shape == (2, 16, 16) and a.dtype in (np.float32, np.float64)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_allclose(first[0], a[0], atol=1e-12)  # frame 0 sits at t_final / n_frames


# --------------------------------------------------------------------- diffusion-reaction


def _smooth_dr_start(n: int) -> np.ndarray:
    """Neumann-compatible (zero normal derivative) smooth fields on the cell centres of [-1,1]^2."""
    c = -1 + (np.arange(n) + 0.5) * 2 / n
    x, y = np.meshgrid(c, c, indexing="ij")
    u = 0.8 * np.cos(np.pi * (x + 1) / 2) * np.cos(np.pi * (y + 1))
    v = 0.5 * np.cos(np.pi * (x + 1)) * np.cos(1.5 * np.pi * (y + 1))
    return np.stack([u, v], axis=-1)


def _inject(fine: np.ndarray, n: int) -> np.ndarray:
    """Cell-centred grids refined by 3 share centres: coarse cell i is fine cell 3 i + 1."""
    r = fine.shape[0] // n
    return fine[r // 2 :: r, r // 2 :: r]


def test_dr_space_error_falls_at_second_order() -> None:
    t_final, ns, ref_n = 0.2, (10, 30, 90), 270
    ref = simulate_diffusion_reaction(ref_n, t_final, 2, rng=0, u0=_smooth_dr_start(ref_n))[-1]
    errors = [
        np.abs(simulate_diffusion_reaction(n, t_final, 2, rng=0, u0=_smooth_dr_start(n))[-1] - _inject(ref, n)).max()
        for n in ns
    ]
    orders = [np.log(errors[i] / errors[i + 1]) / np.log(3) for i in range(2)]
    print(f"DR space: errors {[f'{e:.2e}' for e in errors]}, observed orders {[f'{p:.2f}' for p in orders]}")
    assert all(abs(p - 2.0) < 0.3 for p in orders)


def test_dr_time_error_falls_at_fourth_order() -> None:
    n, u0 = 16, _smooth_dr_start(16)
    dts = (0.2, 0.1, 0.05)
    ref = simulate_diffusion_reaction(n, 1.0, 2, rng=0, u0=u0, dt=0.0125)[-1]
    errors = [np.abs(simulate_diffusion_reaction(n, 1.0, 2, rng=0, u0=u0, dt=dt)[-1] - ref).max() for dt in dts]
    orders = [np.log2(errors[i] / errors[i + 1]) for i in range(2)]
    print(f"DR time: errors {[f'{e:.2e}' for e in errors]}, observed orders {[f'{p:.2f}' for p in orders]}")
    assert all(abs(p - 4.0) < 0.3 for p in orders)


def test_dr_random_start_and_step_limit() -> None:
    a = simulate_diffusion_reaction(16, 0.5, 3, rng=np.random.default_rng(7))
    b = simulate_diffusion_reaction(16, 0.5, 3, rng=np.random.default_rng(7))
    assert a.shape == (3, 16, 16, 2)
    np.testing.assert_array_equal(a, b)
    assert 0.5 < a[0].std() < 1.5  # frame 0 is the standard-normal start
    assert np.abs(a[-1]).max() < np.abs(a[0]).max()  # diffusion and the cubic term tame it
    with pytest.raises(ValueError, match="dt"):
        simulate_diffusion_reaction(64, 0.5, 3, rng=0, dt=1.0)


# -------------------------------------------------------------------------- shallow water


def test_swe_reflective_walls_keep_mass_and_depth_positive() -> None:
    # t_final = 3 lets the bore reach the walls and reflect.
    run = run_shallow_water(48, 3.0, 7, rng=np.random.default_rng(11), boundary="reflective")
    h = run.state[..., 0]
    mass = h.sum(axis=(1, 2)) * run.dx**2
    drift = np.abs(mass / mass[0] - 1).max()
    asym = max(np.abs(h - h.transpose(0, 2, 1)).max(), np.abs(h - h[:, ::-1]).max())
    print(f"SWE: mass drift {drift:.1e}, min depth {run.min_depth:.3f} over {run.n_steps} steps, asymmetry {asym:.1e}")
    assert drift < 1e-12
    assert run.min_depth > 0.0
    assert np.abs(h[-1] - h[0]).max() > 0.1  # the dam really broke
    assert asym < 1e-10  # a radially symmetric start stays symmetric under the grid's symmetries


def test_swe_rectangular_basin_keeps_mass_and_its_mirror_symmetries() -> None:
    # the Well stand-in's basin: twice as long in y, same cell size, dam at the centre
    run = run_shallow_water((16, 32), 3.0, 5, rng=np.random.default_rng(3), boundary="reflective")
    h = run.state[..., 0]
    assert run.state.shape == (5, 16, 32, 3) and run.dx == pytest.approx(5.0 / 16)
    mass = h.sum(axis=(1, 2))
    assert np.abs(mass / mass[0] - 1).max() < 1e-12 and run.min_depth > 0.0
    assert np.abs(h - h[:, ::-1]).max() < 1e-10 and np.abs(h - h[:, :, ::-1]).max() < 1e-10
    assert np.abs(h[-1] - h[0]).max() > 0.1


def test_swe_outputs_and_transmissive_boundary() -> None:
    frames = simulate_shallow_water(32, 3.0, 4, rng=5, boundary="transmissive")
    run = run_shallow_water(32, 3.0, 4, rng=5, boundary="transmissive")
    assert frames.shape == (4, 32, 32, 1)
    np.testing.assert_array_equal(frames[..., 0], run.state[..., 0])
    assert set(np.unique(frames[0])) == {1.0, 2.0} and 0.3 <= run.radius <= 0.7
    mass = frames[..., 0].sum(axis=(1, 2))
    assert mass[-1] < mass[0] * (1 - 1e-3)  # the bore leaves through open boundaries
    with pytest.raises(ValueError, match="boundary"):
        simulate_shallow_water(16, 1.0, 2, rng=0, boundary="open")


# ---------------------------------------------------------------------- compressible NS


@pytest.mark.parametrize("mach", [1.0, 0.1])
def test_cns_conserves_mass_momentum_energy(mach: float) -> None:
    frames = simulate_compressible_ns(32, mach, 1e-2, 1e-2, 0.2, 5, rng=np.random.default_rng(2))
    rho, p, vx, vy = np.moveaxis(frames, -1, 0)
    mass = rho.sum(axis=(1, 2))
    mom = np.stack([(rho * vx).sum(axis=(1, 2)), (rho * vy).sum(axis=(1, 2))])
    energy = (p / (GAMMA - 1) + 0.5 * rho * (vx**2 + vy**2)).sum(axis=(1, 2))
    mom_scale = np.abs(rho[0] * vx[0]).sum() + np.abs(rho[0] * vy[0]).sum()  # totals start near 0
    drifts = {
        "mass": np.abs(mass / mass[0] - 1).max(),
        "momentum": np.abs(mom - mom[:, :1]).max() / mom_scale,
        "energy": np.abs(energy / energy[0] - 1).max(),
    }
    print(f"CNS M={mach}: " + ", ".join(f"{k} drift {v:.1e}" for k, v in drifts.items()))
    assert all(v < 1e-10 for v in drifts.values())
    speed = np.sqrt(vx[0] ** 2 + vy[0] ** 2)
    assert np.sqrt(np.mean(speed**2)) / np.sqrt(GAMMA) == pytest.approx(mach, rel=1e-6)
    assert abs(rho[0].mean() - 1) < 0.1 and abs(p[0].mean() - 1) < 0.1
    assert np.abs(frames[-1] - frames[0]).max() > 0.01 * mach
    assert rho.min() > 0 and p.min() > 0


def test_cns_shear_wave_decays_at_viscous_rate() -> None:
    # u = A sin(2 pi y) is an exact incompressible solution decaying as exp(-eta/rho (2pi)^2 t);
    # at small A the viscous heating it causes is negligible.
    eta, amp, t_final = 1e-2, 1e-2, 0.5
    errors = []
    for n in (16, 32):
        _, y = _unit_grid(n)
        y = y + 0.5 / n  # cell centres
        shape = np.sin(2 * np.pi * y)
        state0 = np.stack([np.ones((n, n)), np.ones((n, n)), amp * shape, np.zeros((n, n))], axis=-1)
        frames = simulate_compressible_ns(n, 0.1, eta, eta, t_final, 2, rng=0, state0=state0)
        measured = (frames[-1, ..., 2] * shape).sum() / (shape**2).sum()
        errors.append(abs(measured / (amp * np.exp(-eta * (2 * np.pi) ** 2 * t_final)) - 1))
    print(f"CNS shear wave: decay error {errors[0]:.2%} (n=16), {errors[1]:.2%} (n=32)")
    assert errors[1] < 0.05
    assert errors[0] / errors[1] > 3.0  # numerical dissipation shrinks with the grid


# ------------------------------------------------------------------------------- smoke


def test_smoke_projection_leaves_no_divergence() -> None:
    run = run_smoke(32, 0.5, 20.0, 6, rng=np.random.default_rng(5))
    worst = run.relative_divergence.max()
    print(f"smoke: max relative divergence {worst:.1e} over {run.n_steps} projections")
    assert run.n_steps > 10
    assert worst < 1e-8
    u, vx, vy = np.moveaxis(run.frames[-1], -1, 0)
    assert np.abs(vy).max() > 0.1  # buoyancy did drive a flow
    assert (u * vy).sum() > 0  # and the smoke, on balance, rises


def test_smoke_projection_is_an_exact_idempotent_solve() -> None:
    box = _StaggeredBox(24, 32.0)
    rng = np.random.default_rng(0)
    vx, vy = rng.standard_normal((25, 24)), rng.standard_normal((24, 25))
    vx[0], vx[-1], vy[:, 0], vy[:, -1] = 0.0, 0.0, 0.0, 0.0
    box.project(vx, vy)
    once = (vx.copy(), vy.copy())
    box.project(vx, vy)
    scale = box.gradient_scale(*once)
    assert np.abs(box.divergence(*once)).max() / scale < 1e-12
    np.testing.assert_allclose(vx, once[0], atol=1e-12)
    np.testing.assert_allclose(vy, once[1], atol=1e-12)


def test_smoke_outputs_and_buoyancy_dependence() -> None:
    weak = simulate_smoke(16, 0.2, 6.0, 3, rng=1)
    strong = simulate_smoke(16, 0.5, 6.0, 3, rng=1)
    assert weak.shape == (3, 16, 16, 3)
    np.testing.assert_array_equal(weak[0], strong[0])  # same seed, same start
    assert np.abs(weak[0, ..., 1:]).max() == 0.0  # starts at rest
    assert strong[-1, ..., 2].max() > weak[-1, ..., 2].max()


# ------------------------------------------------------------------------------ cavity


def test_cavity_centreline_profile_at_re_100() -> None:
    n = 32
    frames, mask, vx, _, div = run_cavity(n, 1.0, 1e-2, 15.0, 4, rng=0)
    profile = vx[n // 2]  # u on x = 1/2 at the cell-centre heights
    y = (np.arange(n) + 0.5) / n
    y_min = y[profile.argmin()]
    crossing = y[np.flatnonzero(np.diff(np.sign(profile)) > 0)]
    change = np.abs(frames[-1] - frames[-2]).max()
    print(
        f"cavity Re=100: u top {profile[-1]:.3f}, min {profile.min():.3f} at y={y_min:.3f}, "
        f"zero at y={crossing}, late change {change:.1e}, divergence {div.max():.1e}"
    )
    assert mask.dtype == np.float32 and np.all(mask == 1)
    assert change < 1e-2  # steady
    assert profile[-1] > 0.8  # dragged along by the lid
    assert -0.25 < profile.min() < -0.15  # the return flow (Ghia et al.: -0.211 at y = 0.453)
    assert 0.35 < y_min < 0.5
    assert len(crossing) == 1 and 0.6 < crossing[0] < 0.8
    assert div.max() < 1e-10


def test_cavity_obstacle_is_at_rest_and_flow_is_solenoidal() -> None:
    frames, mask, vx, vy, div = run_cavity(32, 1.0, 1e-2, 2.0, 3, rng=np.random.default_rng(4), obstacle=True)
    solid = mask == 0
    print(
        f"cavity obstacle: {int(solid.sum())} solid cells, |v| inside {np.abs(frames[:, solid]).max():.1e}, "
        f"divergence {div.max():.1e}"
    )
    assert mask.dtype == np.float32 and set(np.unique(mask)) == {0.0, 1.0}
    assert 0 < solid.sum() < 0.2 * mask.size
    assert np.abs(frames[:, solid]).max() == 0.0
    # every face touching the obstacle is at rest, not just the cell averages
    assert np.abs(vx[1:][solid]).max() == 0.0 and np.abs(vx[:-1][solid]).max() == 0.0
    assert np.abs(vy[:, 1:][solid]).max() == 0.0 and np.abs(vy[:, :-1][solid]).max() == 0.0
    assert div.max() < 1e-10
    assert np.abs(frames[-1]).max() > 0.5  # the lid drives the flow
    public_frames, public_mask = simulate_cavity(32, 1.0, 1e-2, 2.0, 3, rng=np.random.default_rng(4), obstacle=True)
    np.testing.assert_array_equal(public_frames, frames)
    np.testing.assert_array_equal(public_mask, mask)


# -------------------------------------------------------------------- argument checking


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: simulate_ns_vorticity(15, 1e-3, 1.0, 2, rng=0), "n must be even"),
        (lambda: simulate_ns_vorticity(16, -1.0, 1.0, 2, rng=0), "nu"),
        (lambda: simulate_ns_vorticity(16, 1e-3, 1.0, 0, rng=0), "n_frames"),
        (lambda: simulate_ns_vorticity(16, 1e-3, 1.0, 2, rng="seed"), "rng"),
        (lambda: simulate_ns_vorticity(16, 1e-3, 1.0, 2, rng=0, w0=np.zeros((8, 8))), "w0"),
        (lambda: simulate_ns_vorticity(16, 1e-3, 1.0, 2, rng=0, dt=0.0), "dt"),
        (lambda: simulate_diffusion_reaction(16, -1.0, 2, rng=0), "t_final"),
        (lambda: simulate_diffusion_reaction(16, 1.0, 2, rng=0, u0=np.zeros((16, 16))), "u0"),
        (lambda: simulate_shallow_water(2.5, 1.0, 2, rng=0), "n"),
        (lambda: simulate_compressible_ns(16, 0.0, 1e-2, 1e-2, 1.0, 2, rng=0), "mach"),
        (lambda: simulate_compressible_ns(16, 1.0, -1e-2, 1e-2, 1.0, 2, rng=0), "eta"),
        (lambda: simulate_compressible_ns(16, 1.0, 1e-2, float("nan"), 1.0, 2, rng=0), "zeta"),
        (lambda: simulate_smoke(16, -0.5, 1.0, 2, rng=0), "buoyancy"),
        (lambda: simulate_cavity(16, 1.0, 0.0, 1.0, 2, rng=0), "nu"),
        (lambda: simulate_cavity(16, 0.0, 1e-2, 1.0, 2, rng=0), "lid_velocity"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: simulate_diffusion_reaction(8, 0.2, 2, rng),
        lambda rng: simulate_shallow_water(8, 0.2, 2, rng),
        lambda rng: simulate_compressible_ns(8, 0.5, 1e-2, 1e-2, 0.05, 2, rng),
        lambda rng: simulate_smoke(8, 0.3, 2.0, 2, rng),
        lambda rng: simulate_cavity(8, 1.0, 0.05, 0.2, 2, rng, obstacle=True)[0],
    ],
)
def test_same_generator_state_same_trajectory(make) -> None:
    a = make(np.random.default_rng(123))
    b = make(np.random.default_rng(123))
    assert a.dtype in (np.float32, np.float64) and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------- compressible NS, 3-D


def test_cns3d_conserves_mass_momentum_energy() -> None:
    frames = simulate_compressible_ns3d(12, 1.0, 0.2, 4, rng=np.random.default_rng(3))
    rho, p, vx, vy, vz = np.moveaxis(frames, -1, 0)
    axes = (1, 2, 3)
    mass = rho.sum(axis=axes)
    mom = np.stack([(rho * v).sum(axis=axes) for v in (vx, vy, vz)])
    energy = (p / (GAMMA - 1) + 0.5 * rho * (vx**2 + vy**2 + vz**2)).sum(axis=axes)
    mom_scale = sum(np.abs(rho[0] * v[0]).sum() for v in (vx, vy, vz))
    drifts = {
        "mass": np.abs(mass / mass[0] - 1).max(),
        "momentum": np.abs(mom - mom[:, :1]).max() / mom_scale,
        "energy": np.abs(energy / energy[0] - 1).max(),
    }
    print("CNS-3D M=1: " + ", ".join(f"{k} drift {v:.1e}" for k, v in drifts.items()))
    assert all(v < 1e-10 for v in drifts.values())
    speed = np.sqrt(vx[0] ** 2 + vy[0] ** 2 + vz[0] ** 2)
    assert np.sqrt(np.mean(speed**2)) / np.sqrt(GAMMA) == pytest.approx(1.0, rel=1e-6)
    assert np.abs(frames[-1] - frames[0]).max() > 0.01 and rho.min() > 0 and p.min() > 0


def test_cns3d_flow_without_z_dependence_is_the_2d_solvers_inviscid_flow() -> None:
    """The same fluxes, one axis more: on a state constant along z (w = 0) the 3-D right-hand side equals the 2-D
    solver's (eta = zeta = 0) to round-off, and has no z-momentum."""
    from nestor_ds.data.solvers import compressible_ns as two
    from nestor_ds.data.solvers import compressible_ns3d as three

    rng = np.random.default_rng(4)
    w2 = two.random_initial_state(16, 0.8, rng)  # (rho, u, v, p) [4, 16, 16]
    w3 = np.zeros((5, 16, 16, 6))
    w3[[0, 1, 2, 4]] = w2[..., None]
    rhs2 = two._rhs(two.conserved(w2), 1 / 16, 0.0, 0.0)
    rhs3 = three._rhs(three.conserved(w3), 1 / 16)
    np.testing.assert_allclose(rhs3[[0, 1, 2, 4]], np.broadcast_to(rhs2[..., None], (4, 16, 16, 6)), atol=1e-12)
    assert np.abs(rhs3[3]).max() < 1e-12


def test_wave_standing_mode_oscillates_at_the_discrete_frequency() -> None:
    """u = cos(w t) sin(pi x / L) sin(pi y / L) is exact for the leapfrog scheme at its discrete frequency."""
    import math

    from nestor_ds.data.solvers.acoustic_wave import LENGTH, nodes, simulate_acoustic_wave

    n, c = 23, 3000.0
    mode = np.sin(np.pi * nodes(n) / LENGTH)
    u0 = mode[:, None] * mode[None, :]
    frames, dt = simulate_acoustic_wave(np.full((n, n), c), u0, 0.3, 16)
    h = LENGTH / (n + 1)
    w = (2 / dt) * math.asin(c * dt / h * math.sqrt(2.0) * math.sin(math.pi * h / (2 * LENGTH)))
    expect = np.cos(w * np.linspace(0, 0.3, 16))[:, None, None] * u0
    np.testing.assert_allclose(frames, expect, atol=1e-12)
    assert w == pytest.approx(c * math.pi * math.sqrt(2) / LENGTH, rel=1e-2)


def test_wave_sets_speed_fields_and_reflection() -> None:
    """Layered speeds vary along x only; a pulse in a layered medium stays bounded (leapfrog is stable)."""
    from nestor_ds.data.solvers import simulate_wave_set

    u, c = simulate_wave_set(24, "layer", 0.3, 21, 0)
    assert u.shape == (21, 24, 24) and np.all(c == c[:, :1]) and 2000 <= c.min() and c.max() <= 5000
    assert np.abs(u).max() < 2 * np.abs(u[0]).max()
    ug, cg = simulate_wave_set(24, "gauss", 0.4, 16, 0)
    assert ug.shape == (16, 24, 24) and np.ptp(cg[:, 0]) > 0 and np.ptp(cg[0]) > 0


def test_swe_periodic_rectangle_keeps_mass_and_moves() -> None:
    x = np.arange(12)[:, None] / 12 + np.zeros((1, 24))
    h0 = 1 + 0.1 * np.cos(2 * np.pi * x)
    run = run_shallow_water((12, 24), 1.0, 5, 0, boundary="periodic", h0=h0)
    mass = run.state[..., 0].sum(axis=(1, 2))
    np.testing.assert_allclose(mass, mass[0], rtol=1e-12)
    assert np.abs(run.state[-1, ..., 0] - h0).max() > 0.01  # the bump has moved
    np.testing.assert_allclose(run.state[..., 0], run.state[..., :1, 0].repeat(24, -1), atol=1e-12)  # x-only
