"""Tail diagnostics of Monte Carlo integrands: the Pareto ``k̂`` of PSIS.

A sample mean is only as good as the tail of what is averaged. If ``|f(Z)|`` has a
generalized-Pareto upper tail with shape ``k`` (``P(|f| > t) ~ t^{-1/k}``), then
``𝔼|f|^r`` is finite exactly for ``r < 1/k``: the mean exists iff ``k < 1`` and the
variance (hence a central limit theorem and a meaningful standard error) iff
``k < 1/2``. Vehtari, Simpson, Gelman, Yao & Gabry, "Pareto smoothed importance
sampling" (JMLR 25, 2024; arXiv:1507.02646), §3, estimate ``k`` from the largest
``M = min(S/5, 3√S)`` of ``S`` draws by fitting a generalized Pareto distribution to
their exceedances over the next largest draw, with the profile-likelihood estimator
of Zhang & Stephens, "A new and efficient estimation method for the generalized
Pareto distribution" (Technometrics 51, 2009), and use ``k̂`` as a *pre-asymptotic*
reliability measure: below ``0.7`` (``min(1 − 1/log₁₀ S, 0.7)``, their §3.2.4) the
estimate's error behaves as the central limit theorem says, above it the sample mean
is unreliable however it looks, and ``k̂ ≥ 1`` suggests the mean does not exist. A
*standard error* needs more: a finite variance, ``k < 1/2`` (:data:`KHAT_UNRELIABLE`).

Functions here work on a batch of rows (one per Monte Carlo replicate), vectorised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import DivergenceError
from ..core.interpreter import annotate
from .existence import exists_for_every_law
from .plan import describe, scalar_var, split_deps

__all__ = [
    "gpd_fit",
    "pareto_khat",
    "tail_size",
    "assess",
    "stable_errors",
    "StableError",
    "KHAT_UNRELIABLE",
    "KHAT_INFINITE_MEAN",
    "KHAT_NO_INTERVAL",
]

#: ``k̂`` at or above which a Monte Carlo value is not trusted: ``k ≥ 1/2`` is an infinite
#: variance, and the replicate standard error needs a finite one. Vehtari et al. (2024,
#: §3.2.4) call estimates reliable up to ``min(1 − 1/log₁₀ S, 0.7)`` — for the *error of
#: the mean*; the *standard error* is what fails first: 𝔼 e^{2 relu(Z)} (k̂ ≈ 0.59 on 2¹⁴
#: draws, 16 replicates) gives a spread over 100 seeds 1.2–1.36 times the mean reported
#: standard error and 16–19 % of |z| > 2 with QMC (``benchmarks/calibration.py``).
KHAT_UNRELIABLE = 0.5
#: ``k̂`` at or above which the mean of ``|f|`` looks infinite (GPD shape ``k ≥ 1``).
KHAT_INFINITE_MEAN = 1.0
#: Tail index (``k̂`` plus one standard error) from which a flagged value gets no finite
#: interval (:meth:`StableError.interval`). Measured on ``𝔼|v|^{−p}`` (``k = p``), 100
#: seeds of 2¹⁸ samples, QMC and iid alternating: coverage of the 95 % interval (an
#: infinite one counting as covering) 95/94/95 % for ``k = 0.6/0.7/0.8`` with this
#: cap, against 94/95/97 % at 0.75 and 95/94/93 % at 0.85
#: (``benchmarks/calibration.py``).
KHAT_NO_INTERVAL = 0.8

#: Fewest positive exceedances a tail fit is made from (fewer: the top is an atom).
MIN_EXCEEDANCES = 10
#: Numbers per block of the profile likelihood's ``log(1 − θx)`` table (bounded memory:
#: ``m·n`` is ~650,000 for the tail of 4·10⁶ draws).
_BLOCK = 2**15
#: Zhang–Stephens prior: the grid of ``θ`` is scaled by ``1/(3 x_{(n/4)})`` (their §3).
_ZS_PRIOR_SCALE = 3.0
#: Weakly informative prior on ``k`` (Vehtari et al. 2024, Appendix C): ``k`` is shrunk
#: towards 1/2 as if by this many extra observations.
_K_PRIOR_N = 10.0


def tail_size(S: int) -> int:
    """``M = min(S/5, 3√S)`` draws in the fitted tail (Vehtari et al. 2024, §3, with
    relative efficiency 1)."""
    return int(max(5, min(S // 5, math.ceil(3.0 * math.sqrt(S)))))


def gpd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Generalized Pareto fit of exceedances by the Zhang–Stephens estimator.

    The GPD with shape ``k`` and scale ``σ`` has density
    ``σ⁻¹ (1 + k x/σ)^{−1/k − 1}`` on ``x ≥ 0``. With ``θ = −k/σ`` the profile
    log-likelihood is ``ℓ(θ) = n (log(−θ/k̃(θ)) − k̃(θ) − 1)`` with
    ``k̃(θ) = mean log(1 − θ xᵢ)`` [Zhang & Stephens 2009, §2]. The estimate of ``θ`` is its posterior mean over a grid of
    ``m = 30 + ⌊√n⌋`` points ``θ_j = 1/x_(n) + (1 − √(m/(j − ½)))/(3 x_(⌊n/4 + ½⌋))``
    weighted by ``exp ℓ(θ_j)`` (their Eq. (7)); then ``k = mean log(1 − θ̂ xᵢ)`` and
    ``σ = −k/θ̂``, with ``k`` finally shrunk towards 1/2 by a weak prior
    (``(n k + 5)/(n + 10)``, Vehtari et al. 2024, Appendix C).

    Parameters
    ----------
    x : ndarray, shape (B, n)
        Exceedances (``≥ 0``), each row sorted ascending; ``n ≥ 5``.

    Returns
    -------
    k, sigma : ndarray, shape (B,)
        Shape (``k > 0``: heavy tail, ``1/k`` finite moments) and scale. Rows whose
        exceedances are all 0 (a bounded, atom-topped sample) get ``k = −inf``.

    Notes
    -----
    Checked against ``scipy.stats.genpareto.fit`` and against samples of known ``k``
    in ``tests/test_montecarlo.py``.
    """
    x = np.asarray(x, dtype=float)
    B, n = x.shape
    k_out = np.full(B, -np.inf)
    s_out = np.zeros(B)
    top = x[:, -1]
    ok = top > 0
    if not ok.any():
        return k_out, s_out
    xs = x[ok]
    m = 30 + int(math.sqrt(n))
    j = np.arange(1, m + 1, dtype=float)
    quart = xs[:, max(0, int(n / 4 + 0.5) - 1)]
    quart = np.where(quart > 0, quart, xs[:, -1])  # (a tail of mostly ties)
    theta = (1.0 - np.sqrt(m / (j - 0.5)))[None, :] / (_ZS_PRIOR_SCALE * quart[:, None]) + 1.0 / xs[
        :, -1, None
    ]  # (b, m), all < 1/x_(n): 1 − θx > 0
    kt = np.empty_like(theta)  # k̃(θ) = mean log(1 − θx), in blocks of ≤ _BLOCK numbers
    step = max(1, _BLOCK // n)
    with np.errstate(divide="ignore", invalid="ignore"):
        for r in range(theta.shape[0]):
            for j in range(0, m, step):
                t = np.multiply(theta[r, j : j + step, None], -xs[r, None, :])
                kt[r, j : j + step] = np.log1p(t, out=t).mean(axis=-1)
        ll = n * (np.log(-theta / kt) - kt - 1.0)
    ll = np.where(np.isfinite(ll), ll, -np.inf)
    w = np.exp(ll - ll.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    th = (w * np.where(np.isfinite(ll), theta, 0.0)).sum(axis=1)
    k = np.log1p(-th[:, None] * xs).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = np.where(th != 0, -k / th, xs.mean(axis=1))
    k = (n * k + _K_PRIOR_N * 0.5) / (n + _K_PRIOR_N)
    k_out[ok], s_out[ok] = k, sigma
    return k_out, s_out


def pareto_khat(values: np.ndarray, tail: int | None = None) -> np.ndarray:
    """Pareto ``k̂`` of the upper tail of ``|values|``, one per row.

    Parameters
    ----------
    values : ndarray, shape (B, S)
        Samples of an integrand (e.g. one row per Monte Carlo replicate).
    tail : int, optional
        Draws in the tail (default :func:`tail_size` of ``S``).

    Returns
    -------
    ndarray, shape (B,)
        The GPD shape fitted to the exceedances of the ``M`` largest ``|values|``
        over the ``(M+1)``-th largest (Vehtari et al. 2024, §3); ``−inf`` for rows
        whose largest values are tied (bounded integrands at an atom).
    """
    a = np.abs(np.asarray(values, dtype=float))
    if a.ndim == 1:
        a = a[None]
    M = tail if tail is not None else tail_size(a.shape[1])
    return khat_of_tops(top_values(a, min(M, a.shape[1] - 1)))


def top_values(values: np.ndarray, M: int) -> np.ndarray:
    """The ``M + 1`` largest ``|values|`` per row (K, S) → (K, M + 1), unsorted: what a
    chunk of a replicate contributes to its tail (merged with :func:`merge_tops`)."""
    a = np.abs(values)  # (a new array: partitioned in place)
    S = a.shape[-1]
    if S <= M + 1:
        return a
    a.partition(S - M - 1, axis=-1)
    return a[..., S - M - 1 :].copy()


def merge_tops(a: np.ndarray | None, b: np.ndarray, M: int) -> np.ndarray:
    """The ``M + 1`` largest of two sets of top values (per row)."""
    if a is None:
        return b
    return top_values(np.concatenate([a, b], axis=-1), M)


def pwm_shape(x: np.ndarray) -> np.ndarray:
    """GPD shape by probability-weighted moments (Hosking & Wallis, "Parameter and
    quantile estimation for the generalized Pareto distribution", Technometrics 29,
    1987): with ``a_r = 𝔼[X (1 − F(X))^r] = σ/((r + 1)(r + 1 − k))``,
    ``k = 2 − a₀/(a₀ − 2a₁)``, ``a₁`` estimated by ``mean((n − i)/(n − 1) x_(i))``.
    O(n); rows (B, n) sorted ascending. Used for tails that are clearly light."""
    n = x.shape[1]
    a0 = x.mean(axis=1)
    a1 = (x * ((n - 1 - np.arange(n)) / (n - 1))[None]).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2.0 - a0 / (a0 - 2.0 * a1)


def khat_of_tops(tops: np.ndarray) -> np.ndarray:
    """``k̂`` per row from the ``M + 1`` largest values (threshold included).

    Exceedances of 0 (draws tied with the threshold: an atom, e.g. the zeros of a
    product of relus that are rarely both positive) carry no tail information and are
    dropped; a row left with fewer than :data:`MIN_EXCEEDANCES` distinct positive ones
    is bounded at its top (``−inf``).

    Rows whose largest exceedance is below ``H_n + 2`` times their mean (``H_n`` the
    harmonic number: the expected ratio for an exponential tail, ``k = 0``; a tail with
    ``k = 1/2`` has a ratio of about ``2√n``) are clearly light: they get the O(n)
    estimate :func:`pwm_shape` (shrunk by the same prior) instead of the
    Zhang–Stephens fit, whose ``O(n^{3/2})`` cost dominated Monte Carlo on programs
    with hundreds of Moments."""
    t = np.sort(tops, axis=-1)
    exc = t[:, 1:] - t[:, :1]
    n = exc.shape[1]
    out = np.full(t.shape[0], -np.inf)
    tied = (exc <= 0).any(axis=1)
    light = ~tied & (exc[:, -1] < (np.log(n) + np.euler_gamma + 2.0) * exc.mean(axis=1))
    if light.any():
        out[light] = (n * pwm_shape(exc[light]) + _K_PRIOR_N * 0.5) / (n + _K_PRIOR_N)
    full = np.flatnonzero(~tied & ~light)
    if full.size:
        out[full] = gpd_fit(exc[full])[0]
    for r in np.flatnonzero(tied):
        pos = exc[r][exc[r] > 0]
        # (distinct values: rounding noise, 𝔼 tanh(h₂ − 2h₁)² with h₂ = 2h₁, takes two
        # values ~10⁻³⁰ in its tail, and a fit to them gave k̂ = 6·10¹⁵)
        if np.unique(pos).size >= MIN_EXCEEDANCES:
            out[r] = khat_of_tops(np.concatenate([[0.0], pos])[None])[0]
    return out


@dataclass(frozen=True)
class StableError:
    """The error law of a sample mean whose summands have a Pareto tail of index
    ``α = 1/k ∈ (1, 2)`` (a mean, no variance).

    If ``P(|X| > x) ~ C x^{−α}``, the generalized central limit theorem (Gnedenko &
    Kolmogorov 1954; Samorodnitsky & Taqqu, *Stable non-Gaussian random processes*,
    1994, Thm. 1.8.1 and Prop. 1.2.15 for the constant) gives
    ``mean_N − μ ≈ γ N^{1/α − 1} S`` with ``S`` a standard ``α``-stable variable of skewness
    ``β = ±1`` (the sign of the heavy tail), ``γ^α = C/C_α``,
    ``C_α = (1 − α)/(Γ(2 − α) cos(πα/2))``. The error shrinks like ``N^{1/α − 1}``, slower
    than ``N^{−1/2}``, and is skewed: most samples miss the rare huge values, a few
    contain one.

    Attributes
    ----------
    alpha : float
        Tail index ``1/k``, ``k`` = ``k̂`` plus one standard error (the interval errs wide).
    scale : float
        ``γ N^{1/α − 1}``: the scale of the mean's error after ``N`` draws.
    """

    alpha: float
    scale: float

    def interval(self, value: float, level: float = 0.95) -> tuple[float, float]:
        """The ``level`` interval ``value ± scale · max(|q_{(1−ℓ)/2}|, q_{(1+ℓ)/2})``, ``q``
        the quantiles of the totally skewed stable law ``S_α(1, 1, 0)`` in the S1
        parametrization (mean 0; Samorodnitsky & Taqqu 1994, Def. 1.1.6). The error is
        skewed towards the side of the heavy tail (an estimate is more often a little
        low than a little high, rarely much too high, when the tail is positive); the
        tail's side is not tracked, and the interval is the union of the two skewed
        ones (``β = ±1``): it errs wide.

        ``(−inf, inf)`` when the tail index is ``k ≥`` :data:`KHAT_NO_INTERVAL` (after its
        one-standard-error margin): there the stable law is a poor guide at any sample
        size one can afford (its bulk moves away from the mean as ``k → 1``), and no
        interval is given rather than a wrong one."""
        if self.alpha * KHAT_NO_INTERVAL <= 1.0 or not math.isfinite(self.scale):
            return -math.inf, math.inf
        from scipy.stats import levy_stable

        lo, hi = levy_stable.ppf([(1 - level) / 2, (1 + level) / 2], self.alpha, 1.0)
        half = self.scale * max(-float(lo), float(hi))
        return float(value - half), float(value + half)


def stable_errors(
    tops: np.ndarray, khat: np.ndarray, fraction: float, draws: int
) -> list[StableError | None]:
    """:class:`StableError` of each row whose ``k̂`` is in ``[1/2, 1)``, else None.

    The tail constant ``C`` comes from the same generalized Pareto fit as ``k̂``: above
    the threshold ``u`` (exceeded by a ``fraction`` of the draws the tail was fitted on),
    ``P(|X| > x) ≈ fraction · (1 + k(x − u)/σ)^{−1/k} ~ fraction · (σ/k)^{1/k} x^{−1/k}``.

    Parameters
    ----------
    tops : ndarray, shape (R, T + 1)
        The largest ``|values|`` per row (threshold included), as for :func:`khat_of_tops`.
    khat : ndarray, shape (R,)
        Their ``k̂``.
    fraction : float
        ``T`` over the number of draws the tops were taken from.
    draws : int
        ``N``, the draws the mean is taken over.
    """
    out: list[StableError | None] = []
    for top, k in zip(tops, khat):
        if not KHAT_UNRELIABLE <= k < KHAT_INFINITE_MEAN:
            out.append(None)
            continue
        row = np.sort(top)  # (only the flagged rows: most Moments have light tails)
        exc = row[1:] - row[0]
        exc = exc[exc > 0]
        sigma = float(gpd_fit(exc[None])[1][0])
        # the tail at the largest draw, as fitted; beyond it, the index one standard
        # error heavier (Var k̂ ≈ (1 + k)²/T, Smith 1987): a k̂ low by chance would make
        # the interval too short
        k_up = k + (1 + k) / math.sqrt(exc.size)
        alpha = 1.0 / k_up
        if k_up >= KHAT_NO_INTERVAL or not sigma > 0:
            out.append(StableError(alpha, math.inf))  # (no interval: see interval())
            continue
        p_top = fraction * (1 + k * exc[-1] / sigma) ** (-1 / k)
        C = p_top * row[-1] ** alpha
        C_alpha = (1 - alpha) / (math.gamma(2 - alpha) * math.cos(math.pi * alpha / 2))
        gamma = (C / C_alpha) ** (1 / alpha)
        out.append(StableError(alpha, gamma * draws ** (1 / alpha - 1)))
    return out


def assess(
    plan: Any,
    proven: set[int],
    unproven: dict[int, str],
    khat: dict[int, float],
    inexact: dict[int, str] | None = None,
) -> dict[int, str]:
    """Which requests' values are not trusted, and why (by request id).

    Rules, in dependency order:

    * a Monte Carlo Moment whose integrand has ``k̂ ≥ 1`` and whose existence was not
      proven (:mod:`.existence`, for its law or for every law) raises :class:`~tensorprog.core.errors.DivergenceError`:
      its samples look like those of a variable without a mean;
    * ``k̂ ≥ 0.5`` (:data:`KHAT_UNRELIABLE`): flagged — an infinite variance (at this
      sample size): the replicate standard error does not say how far off the mean may
      be. A proven mean with ``k̂ ≥ 1`` (``𝔼 e^{5Ẑ}`` sampled without a tilt) is
      flagged, not refused;
    * an expectation neither proven nor refuted: flagged with the reason;
    * a value whose error estimate does not hold (``inexact``: forced quadrature of an
      integrable singularity): flagged with the reason;
    * a value computed from a flagged one: flagged.
    """
    rid_of = plan.const_req
    k_by_rid = {rid_of[c]: k for c, k in khat.items() if c in rid_of}
    flags: dict[int, str] = {}
    shared: dict[Any, int | None] = {}
    for req in plan.requests:
        k = k_by_rid.get(req.rid)
        if (
            k is not None
            and k >= KHAT_INFINITE_MEAN
            and req.rid not in proven
            and not exists_for_every_law(plan, req)
        ):
            var = scalar_var(req)
            name = var.name if var is not None else describe(req)
            exc = DivergenceError(
                f"the limit of {name} looks infinite: the Monte Carlo samples of its "
                f"|integrand| have a Pareto tail with k̂ = {k:.2f} ≥ 1, the tail of a "
                f"variable without a mean (Vehtari et al. 2024), and its existence could not "
                f"be proven{': ' + unproven[req.rid] if req.rid in unproven else ''}"
            )
            instr = plan.der.program.definition(var) if var is not None else None
            raise annotate(exc, instr, "Limit") if instr is not None else exc
        if k is not None and k >= KHAT_UNRELIABLE:
            flags[req.rid] = (
                f"Monte Carlo integrand with a heavy tail (Pareto k̂ = {k:.2f} "
                f"≥ {KHAT_UNRELIABLE}): the mean and its standard error are not "
                f"reliable"
            )
        elif req.rid in unproven:
            flags[req.rid] = f"existence not proven ({unproven[req.rid]})"
        elif inexact and req.rid in inexact:
            flags[req.rid] = inexact[req.rid]
        else:
            own, key, rest = split_deps(req)
            bad = next((d for d in own if d in flags), None)
            if bad is None and rest:  # (a shared part: looked at once)
                if key not in shared:
                    shared[key] = next((d for d in rest if d in flags), None)
                bad = shared[key]
            if bad is not None:
                src = scalar_var(plan.requests[bad])
                flags[req.rid] = (
                    f"computed from "
                    f"{src.name if src is not None else 'a value'}"
                    f" that is not trusted"
                )
    return flags
