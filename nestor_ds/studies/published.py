"""The published L2RE table (NESTOR paper, DESIGN.md section 5): zero-shot after pre-training on the 12-set
mixture and after 500 fine-tuning epochs. Rows name our registry sets; a row over several sets is compared
with the mean of ours over them."""

from __future__ import annotations

COLUMNS = ("DPOT-Ti", "NESTOR", "DPOT-Ti FT500", "NESTOR FT500")

# row label, our registry sets it covers, values in the order of COLUMNS
ROWS: list[tuple[str, tuple[str, ...], tuple[float, float, float, float]]] = [
    ("FNO 1e-5", ("ns2d_fno_1e-5",), (0.0976, 0.1195, 0.0520, 0.0505)),
    ("FNO 1e-4", ("ns2d_fno_1e-4",), (0.0606, 0.0951, 0.0367, 0.0217)),
    ("FNO 1e-3", ("ns2d_fno_1e-3",), (0.00954, 0.0093, 0.0058, 0.0043)),
    (
        "PDEBench CNS M1 avg",
        ("ns2d_pdb_M1_eta1e-1_zeta1e-1", "ns2d_pdb_M1_eta1e-2_zeta1e-2"),
        (0.0285, 0.0270, 0.0153, 0.0114),
    ),
    (
        "PDEBench CNS M0.1 avg",
        ("ns2d_pdb_M1e-1_eta1e-1_zeta1e-1", "ns2d_pdb_M1e-1_eta1e-2_zeta1e-2"),
        (0.0176, 0.0161, 0.0156, 0.0103),
    ),
    ("DR", ("dr_pdb",), (0.0321, 0.0308, 0.0148, 0.0117)),
    ("SWE", ("swe_pdb",), (0.0056, 0.0052, 0.0024, 0.0026)),
    ("PDEArena NS", ("ns2d_pda",), (0.125, 0.132, 0.0910, 0.0683)),
    ("PDEArena NS-cond", ("ns2d_cond_pda",), (0.384, 0.409, 0.280, 0.285)),
    ("CFDBench", ("cfdbench",), (0.0095, 0.0112, 0.0039, 0.0038)),
]


def published_value(row: str, column: str) -> float:
    """A published table's value at ``row`` and ``column``."""
    values = next(v for label, _, v in ROWS if label == row)
    return values[COLUMNS.index(column)]
