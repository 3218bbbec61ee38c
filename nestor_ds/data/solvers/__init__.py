"""Small numerical solvers that generate stand-ins for the pre-training data sets.

They let the pipeline be exercised end to end (and tested) without the multi-gigabyte
originals, on the same equations, domains and channel orders.  Conventions shared by all:

* plain numpy/scipy, float64 output, axis order ``[T, X, Y(, Z)(, C)]`` with x before y, the
  layout :class:`nestor_ds.data.trajectory.Trajectory` stores;
* ``rng`` is a ``numpy.random.Generator`` (or an int seed), the only source of randomness,
  so a given generator state always yields the same trajectory;
* bad arguments raise ``ValueError`` naming the argument.

Frame 0 is the initial state everywhere except :func:`simulate_ns_vorticity`, which follows
FNO's files in leaving it out.
"""

from __future__ import annotations

from .acoustic_wave import simulate_acoustic_wave, simulate_wave_set
from .cavity import simulate_cavity
from .compressible_ns import simulate_compressible_ns
from .compressible_ns3d import simulate_compressible_ns3d
from .diffusion_reaction import simulate_diffusion_reaction
from .ns_vorticity import simulate_ns_vorticity
from .shallow_water import simulate_shallow_water
from .smoke import simulate_smoke

__all__ = [
    "simulate_acoustic_wave",
    "simulate_wave_set",
    "simulate_cavity",
    "simulate_compressible_ns",
    "simulate_compressible_ns3d",
    "simulate_diffusion_reaction",
    "simulate_ns_vorticity",
    "simulate_shallow_water",
    "simulate_smoke",
]
