"""The numbers a study report states: mean and spread over seeds, the paired difference to the baseline with
a t-interval, and wins counted two ways (best of all arms per data set; better than the baseline)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Results = dict[str, dict[int, dict[str, float]]]  # arm -> seed -> data set -> value


@dataclass(frozen=True)
class Summary:
    """Mean, sample std and count of one metric over seeds."""

    mean: float
    std: float  # sample standard deviation over seeds (0 for one seed)
    n: int


@dataclass(frozen=True)
class PairedDiff:
    """arm - baseline over the seeds both have; ``low``/``high`` the 95% t-interval (None below 2 seeds)."""

    mean: float
    low: float | None
    high: float | None
    n: int

    @property
    def decided(self) -> bool:
        """The interval excludes 0: the difference is not seed noise at this confidence."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def summarize(values: list[float]) -> Summary:
    """Mean and sample std of ``values``."""
    a = np.asarray(values, dtype=np.float64)
    return Summary(float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0, len(a))


def paired_difference(arm: dict[int, float], baseline: dict[int, float], level: float = 0.95) -> PairedDiff | None:
    """Arm minus baseline over the seeds both ran, with a t confidence interval (None: no shared seed)."""
    seeds = sorted(set(arm) & set(baseline))
    if not seeds:
        return None
    d = np.array([arm[s] - baseline[s] for s in seeds], dtype=np.float64)
    if len(d) < 2:
        return PairedDiff(float(d.mean()), None, None, len(d))
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return PairedDiff(float(d.mean()), float(d.mean()) - half, float(d.mean()) + half, len(d))


def datasets_of(results: Results) -> list[str]:
    """The data sets that appear in ``results``, in first-seen order."""
    seen: dict[str, None] = {}
    for seeds in results.values():
        for values in seeds.values():
            seen.update(dict.fromkeys(values))
    return list(seen)


def table(results: Results) -> dict[str, dict[str, Summary]]:
    """data set -> arm -> summary over seeds (arms missing a data set are absent)."""
    out: dict[str, dict[str, Summary]] = {}
    for ds in datasets_of(results):
        for arm, seeds in results.items():
            values = [v[ds] for v in seeds.values() if ds in v]
            if values:
                out.setdefault(ds, {})[arm] = summarize(values)
    return out


def best_arms(results: Results) -> dict[str, str]:
    """data set -> the arm with the lowest finite mean (lower L2RE is better; a diverged arm, nan, never wins,
    and a data set on which every arm diverged has no best)."""
    out = {}
    for ds, arms in table(results).items():
        finite = [a for a in arms if math.isfinite(arms[a].mean)]
        if finite:
            out[ds] = min(finite, key=lambda a: arms[a].mean)
    return out


def wins(results: Results) -> dict[str, int]:
    """arm -> data sets on which it has the lowest mean of all arms."""
    counts = dict.fromkeys(results, 0)
    for arm in best_arms(results).values():
        counts[arm] += 1
    return counts


def wins_over(results: Results, baseline: str) -> dict[str, tuple[int, int]]:
    """arm -> (data sets where its mean is below the baseline's, data sets both have), as the paper counts
    "better than DPOT on 6 of 12"."""
    t = table(results)
    out = {}
    for arm in results:
        if arm == baseline:
            continue
        both = [ds for ds, arms in t.items() if arm in arms and baseline in arms]
        out[arm] = (sum(t[ds][arm].mean < t[ds][baseline].mean for ds in both), len(both))
    return out
