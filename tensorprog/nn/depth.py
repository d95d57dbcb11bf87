r"""Depth: residual networks, depthwise parametrizations and Depth-μP [TP6].

A residual network with ``L`` blocks, μP in width [TP6 §6.3, Table 2]:

.. math::

    x^0 = U\xi,\qquad
    x^l = x^{l-1} + a\,L^{-\alpha}\,\mathrm{MS}\big(g^l(x^{l-1})\big)\quad(l\in[L]),\qquad
    f = V^\top x^L ,

with the one-layer block :math:`g^l(x)=\phi(W^l x)` (TP6's main subject) or the
two-layer block :math:`g^l(x)=\phi(W^{l,2}\phi(W^{l,1}x))` [TP6 §9], mean subtraction
:math:`\mathrm{MS}(y) = y - \langle y, \mathbf 1\rangle/n` [TP6 §6.3] (ordinary DSL
code: a Moment and a linear combination) and optionally a LayerNorm before the block.
:func:`resnet` returns it as an :class:`~tensorprog.nn.Model`, so
:func:`tensorprog.nn.train` compiles its training and ``run.limit()`` is the
infinite-width limit at depth ``L``.

A **depthwise parametrization** is a pair :math:`(\alpha,\gamma)` [TP6 Def 6.1, 6.2]: the
branch multiplier :math:`aL^{-\alpha}` and the effective learning rate
:math:`\eta n^{-1}L^{-\gamma}` of the hidden weights, applied to
:math:`Q(nL^{\delta}g)` with :math:`\delta` such that :math:`nL^\delta g=\Theta(1)`.
For SGD (:math:`Q` = identity, :math:`\delta=\alpha`: the gradient of :math:`W^l`
carries the branch multiplier) the hidden weights' true learning rate is
:math:`\eta\,L^{\alpha-\gamma}` times μP's width factor [TP6 Def 6.1]; for an
entrywise optimizer such as Adam it is :math:`\eta\,L^{-\gamma}` times μP's.
:meth:`DepthParametrization.lr_mult` returns that factor, which :func:`resnet` puts on
every hidden weight as its ``lr_mult``. Input and output weights follow μP and do not
depend on ``L``.

:func:`classify_depth` states TP6's classification (Claims 7.1–7.5), and
:func:`gradient_diversity` computes, in the infinite-width limit, the correlation of
consecutive blocks' gradients that TP6 §8 identifies as the source of feature diversity.

References
----------
[TP6] G. Yang, D. Yu, C. Zhu, S. Hayou, *Tensor Programs VI: Feature Learning in
Infinite-Depth Neural Networks*, ICLR 2024, arXiv:2310.02244.
[BNLHP] B. Bordelon, L. Noci, M. Li, B. Hanin, C. Pehlevan, *Depthwise Hyperparameter
Transfer in Residual Networks: Dynamics and Scaling Limit*, ICLR 2024, arXiv:2309.16620.
[HY] S. Hayou, G. Yang, *Width and Depth Limits Commute in Residual Networks*, ICML 2023,
arXiv:2302.00453.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from .. import (
    Nonlinearity,
    Program,
    ProgramTypeError,
    ProgramValueError,
    Vector,
    get_nonlinearity,
    grad,
    inner,
    mean,
)
from .model import Model
from .norms import layernorm as _layernorm
from .optim import SGD, Optimizer

__all__ = [
    "DepthParametrization",
    "DepthClassification",
    "depth_muP",
    "depth_ode",
    "depth_standard",
    "classify_depth",
    "resnet",
    "GradientDiversity",
    "gradient_diversity",
]

_HALF = Fraction(1, 2)
_BLOCKS = ("one", "two")


def _fraction(x: Any, what: str) -> Fraction:
    if isinstance(x, bool) or not isinstance(x, (numbers.Real, str, Fraction)):
        raise ProgramTypeError(f"{what} must be a real number or a fraction string, got {x!r}")
    try:
        f = Fraction(x).limit_denominator(10**6) if not isinstance(x, Fraction) else x
    except (ValueError, ZeroDivisionError, OverflowError):
        raise ProgramValueError(
            f"{what} must be a number such as 0.5 or '1/2', got {x!r}"
        ) from None
    if isinstance(x, float) and not math.isfinite(x):
        raise ProgramValueError(f"{what} must be finite, got {x!r}")
    return f


def _depth(depth: Any, what: str = "depth") -> int:
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 1:
        raise ProgramValueError(
            f"{what} must be an int ≥ 1 (the number of blocks L), got {depth!r}"
        )
    return int(depth)


# ---------------------------------------------------------------------------------------
# Depthwise parametrizations and their classification


@dataclass(frozen=True)
class DepthParametrization:
    r"""A depthwise parametrization :math:`(\alpha, \gamma)` of a residual network [TP6 Def 6.2].

    Attributes
    ----------
    alpha : Fraction
        Branch multiplier :math:`aL^{-\alpha}`.
    gamma : Fraction
        Effective learning rate of the hidden weights :math:`\eta n^{-1}L^{-\gamma}`
        (applied to the depth-normalised gradient :math:`nL^{\alpha}g`).
    name : str
        A label for printouts.

    Examples
    --------
    >>> from tensorprog import nn
    >>> P = nn.depth_muP()
    >>> P.multiplier(16), P.lr_mult(16)
    (0.25, 1.0)
    >>> nn.depth_ode().lr_mult(16)  # SGD: L^(α−γ)
    16.0
    """

    alpha: Fraction
    gamma: Fraction
    name: str = field(default="", compare=False)

    def __init__(self, alpha: Any, gamma: Any, name: str = "") -> None:
        a = _fraction(alpha, "DepthParametrization: alpha")
        g = _fraction(gamma, "DepthParametrization: gamma")
        if not isinstance(name, str):
            raise ProgramTypeError(f"DepthParametrization: name must be a str, got {name!r}")
        object.__setattr__(self, "alpha", a)
        object.__setattr__(self, "gamma", g)
        object.__setattr__(self, "name", name or f"(α, γ) = ({a}, {g})")

    def multiplier(self, depth: int, a: float = 1.0) -> float:
        r"""The branch multiplier :math:`a L^{-\alpha}`."""
        return float(a) * float(_depth(depth)) ** -float(self.alpha)

    def lr_mult(self, depth: int, optimizer: Any = None) -> float:
        r"""The hidden weights' learning-rate factor in :math:`L` [TP6 Def 6.1].

        :math:`L^{\alpha-\gamma}` for SGD (its update is the gradient itself, which carries
        the branch multiplier :math:`L^{-\alpha}`: TP6's :math:`\delta=\alpha`), and
        :math:`L^{-\gamma}` for an entrywise optimizer whose update does not scale with
        the gradient (Adam, SignSGD).

        Parameters
        ----------
        depth : int
        optimizer : nn.SGD or another nn.Optimizer (or its class), default SGD
        """
        L = float(_depth(depth))
        cls = (
            SGD
            if optimizer is None
            else (optimizer if isinstance(optimizer, type) else type(optimizer))
        )
        if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
            raise ProgramTypeError(
                f"lr_mult: optimizer must be an nn optimizer (nn.SGD, …) or its class, got "
                f"{optimizer!r}"
            )
        if issubclass(cls, SGD):
            return L ** float(self.alpha - self.gamma)
        return L ** -float(self.gamma)

    def classify(self) -> DepthClassification:
        """:func:`classify_depth` of this parametrization."""
        return classify_depth(self.alpha, self.gamma)


def depth_muP() -> DepthParametrization:
    r"""Depth-μP: :math:`\alpha=\gamma=\tfrac12` [TP6 Claim 7.5, Table 1].

    Branch multiplier :math:`a/\sqrt L`; SGD learning rate :math:`\eta` (independent of
    :math:`L`), Adam :math:`\eta/\sqrt L`.

    Returns
    -------
    DepthParametrization

    Examples
    --------
    >>> from tensorprog import nn
    >>> P = nn.depth_muP()
    >>> P.multiplier(4), P.lr_mult(4), P.classify().is_depth_muP
    (0.5, 1.0, True)
    """
    return DepthParametrization(_HALF, _HALF, "Depth-μP")


def depth_ode() -> DepthParametrization:
    r""":math:`(\alpha,\gamma) = (1, 0)`: the :math:`1/L` branch multiplier.

    TP6's "ODE scaling" [TP6 §5, §10], the branch scaling of CompleteP: stable, nontrivial
    and faithful, but redundant (:math:`\kappa=0`) [TP6 Claim 7.4]. SGD learning rate
    :math:`\eta L`, Adam :math:`\eta`.

    Examples
    --------
    >>> from tensorprog import nn
    >>> [nn.depth_ode().multiplier(4), nn.depth_ode().lr_mult(4)]  # a/L, SGD: L
    [0.25, 4.0]
    """
    return DepthParametrization(1, 0, "ODE (α = 1)")


def depth_standard() -> DepthParametrization:
    r""":math:`(\alpha,\gamma)=(0,0)`: the standard residual network.

    Branch multiplier :math:`a` and a depth-independent learning rate: unstable at
    initialisation as :math:`L\to\infty` [TP6 Claim 7.1] (its features grow like
    :math:`e^{cL}`).

    Examples
    --------
    >>> import tensorprog.nn as nn
    >>> c = nn.depth_standard().classify()
    >>> c.stable_init, c.stable_training  # the second is not classified
    (False, None)
    """
    return DepthParametrization(0, 0, "standard (α = 0)")


@dataclass(frozen=True)
class DepthClassification:
    r"""TP6's classification of a depthwise parametrization (:func:`classify_depth`).

    Properties are those of the limit "width → ∞, then depth → ∞" [TP6 §7].
    A property the claims do not decide (e.g. faithfulness of an unstable
    parametrization) is ``None``.

    Attributes
    ----------
    alpha, gamma : Fraction
    stable_init : bool
        Claim 7.1: :math:`\alpha\ge\tfrac12`.
    stable_training, nontrivial : bool or None
        Claim 7.2 (given stability at init): :math:`\alpha+\gamma\ge1`, resp. :math:`\le1`.
    faithful_init, faithful_training, faithful : bool or None
        Claim 7.3 (given stable and nontrivial): :math:`\alpha\ge\tfrac12`, resp.
        :math:`\alpha\le1`.
    feature_learning : bool or None
        True when stable, nontrivial and faithful [TP6 Def 7.5, §5, §10: the
        :math:`1/\sqrt L` and :math:`1/L` scalings both learn features]; not classified
        otherwise.
    kappa : Fraction or None
        Feature diversity exponent [TP6 Def 7.6]: :math:`\tfrac12` for Depth-μP
        (Claim 7.5), 0 (redundant) for :math:`\alpha\in(\tfrac12,1]` (Claim 7.4).
    reasons : tuple of str
        One sentence per verdict, citing the claim.
    """

    alpha: Fraction
    gamma: Fraction
    stable_init: bool
    stable_training: bool | None
    nontrivial: bool | None
    faithful_init: bool | None
    faithful_training: bool | None
    faithful: bool | None
    feature_learning: bool | None
    kappa: Fraction | None
    reasons: tuple[str, ...]

    @property
    def stable(self) -> bool:
        """Stable at initialisation and during training."""
        return bool(self.stable_init and self.stable_training)

    @property
    def redundant(self) -> bool | None:
        """``κ = 0`` [TP6 Def 7.6]."""
        return None if self.kappa is None else self.kappa == 0

    @property
    def is_depth_muP(self) -> bool:
        """Stable, nontrivial, faithful, feature learning and κ = 1/2: only
        :math:`\\alpha=\\gamma=\\tfrac12` [TP6 Claim 7.5]."""
        return bool(self.feature_learning) and self.kappa == _HALF

    def explain(self) -> str:
        """A table of the verdicts with the reason for each."""
        head = f"depthwise parametrization (α, γ) = ({self.alpha}, {self.gamma})"
        return "\n".join([head, *("  " + r for r in self.reasons)])


def classify_depth(alpha: Any, gamma: Any) -> DepthClassification:
    r"""Classify the depthwise parametrization :math:`(\alpha,\gamma)` [TP6 §7.1].

    The residual network of :func:`resnet` (one-layer blocks, μP in width), in the
    limit width → ∞ then depth → ∞:

    * **Claim 7.1** — stable at initialisation iff :math:`\alpha\ge\tfrac12`
      (:math:`L` independent Θ(:math:`L^{-\alpha}`) increments sum to
      :math:`\Theta(L^{1/2-\alpha})`).
    * **Claim 7.2** — if stable at initialisation: stable during training iff
      :math:`\alpha+\gamma\ge1`; nontrivial iff :math:`\alpha+\gamma\le1` (each block's
      update moves :math:`f` by :math:`L^{-(\alpha+\gamma)}`, summed over :math:`L` blocks).
    * **Claim 7.3** — if stable and nontrivial (:math:`\alpha+\gamma=1`): faithful
      (pre-activations :math:`h^l=\Theta(1)`) at initialisation iff :math:`\alpha\ge\tfrac12`
      and during training iff :math:`\alpha\le1` (for :math:`\alpha>1`, :math:`\gamma<0`
      and the updates of :math:`W^l` blow up with depth).
    * **Claim 7.4** — stable, nontrivial and faithful during training with
      :math:`\alpha\in(\tfrac12,1]`: redundant, feature diversity exponent :math:`\kappa=0`
      (neighbouring layers differ by :math:`O(\epsilon)` over :math:`\epsilon L` layers).
    * **Claim 7.5** — :math:`\alpha=\gamma=\tfrac12` (Depth-μP) is the unique
      parametrization that is stable, nontrivial, faithful, learns features and has
      maximal feature diversity :math:`\kappa=\tfrac12` (Brownian increments:
      :math:`O(\epsilon^{1/2})`).

    These are TP6's claims (heuristic proofs, rigorous in the linear case [TP6 §7, App D]);
    the benchmark ``benchmarks/depth.py`` checks the ones about training dynamics against
    the limit computed at depths 1…64.

    Parameters
    ----------
    alpha, gamma : real or str (e.g. ``"1/2"``)

    Returns
    -------
    DepthClassification

    Examples
    --------
    >>> from tensorprog import nn
    >>> c = nn.classify_depth("1/2", "1/2")
    >>> c.is_depth_muP, c.kappa
    (True, Fraction(1, 2))
    >>> nn.classify_depth(1, 0).redundant
    True
    >>> nn.classify_depth(0, 0).stable_init
    False
    """
    a = _fraction(alpha, "classify_depth: alpha")
    g = _fraction(gamma, "classify_depth: gamma")
    s = a + g
    reasons = []
    st0 = a >= _HALF
    reasons.append(
        f"stable at init: {st0} — Claim 7.1 needs α ≥ 1/2 (α = {a}: the L blocks add "
        f"independent increments of size L^(-α), summing to L^({_HALF - a}))"
    )
    st1 = nt = f0 = f1 = faithful = fl = None
    kappa = None
    if not st0:
        reasons.append(
            "stability during training, nontriviality, faithfulness, κ: not "
            "classified (unstable at initialisation)"
        )
    else:
        st1, nt = s >= 1, s <= 1
        reasons.append(
            f"stable during training: {st1}, nontrivial: {nt} — Claim 7.2: α + γ = {s} "
            f"(each block's update moves f by L^(-(α+γ)), L blocks: L^({1 - s}))"
        )
        if st1 and nt:
            f0, f1 = a >= _HALF, a <= 1
            faithful = f0 and f1
            reasons.append(
                f"faithful at init: {f0}, during training: {f1} — Claim 7.3: α ∈ [1/2, 1]"
                + ("" if f1 else f" (γ = {g} < 0: the updates of W^l grow like L^{-g})")
            )
            fl = True if faithful else None
            reasons.append(
                f"feature learning: {fl} — stable, nontrivial and faithful [TP6 Def 7.5, §10]"
                if faithful
                else "feature learning: not classified (not faithful during training)"
            )
            if faithful:
                kappa = _HALF if a == _HALF else Fraction(0)
                why = (
                    "Claim 7.5: Depth-μP, Brownian increments, κ = 1/2 (maximal)"
                    if a == _HALF
                    else "Claim 7.4: α ∈ (1/2, 1] is redundant, κ = 0"
                )
                reasons.append(f"feature diversity exponent κ = {kappa} — {why}")
            else:
                reasons.append("κ: not classified (not faithful during training)")
        else:
            reasons.append(
                "faithfulness, feature learning, κ: not classified (Claim 7.3 "
                "needs stable and nontrivial, α + γ = 1)"
            )
    return DepthClassification(a, g, st0, st1, nt, f0, f1, faithful, fl, kappa, tuple(reasons))


# ---------------------------------------------------------------------------------------
# Residual networks as nn.Model


def _nonlin(nonlin: Any) -> Callable[..., Vector]:
    if callable(nonlin) and not isinstance(nonlin, (str, Nonlinearity)):
        return nonlin
    return get_nonlinearity(nonlin)


def _ms(y: Vector) -> Vector:
    """Mean subtraction ``MS(y) = y − ⟨y, 1⟩/n`` [TP6 §6.3]."""
    return y - mean(y)


def resnet(
    d_in: int,
    d_out: int,
    depth: int,
    *,
    block: str = "one",
    param: DepthParametrization | None = None,
    branch_mult: float = 1.0,
    nonlin: Any = "relu",
    mean_subtract: bool = True,
    layernorm: bool = False,
    optimizer: Any = None,
    record: Sequence[tuple[int, int]] = (),
    name: str | None = None,
) -> Model:
    r"""A residual network with ``depth`` blocks as an :class:`~tensorprog.nn.Model` [TP6 §6.3].

    .. math::

        x^0 = U\xi,\quad x^l = x^{l-1} + a L^{-\alpha}\,\mathrm{MS}\big(g^l(\mathrm{LN?}(x^{l-1}))\big),
        \quad f = V x^L ,

    with :math:`g^l(x)=\phi(W^lx)` (``block="one"``) or
    :math:`\phi(W^{l,2}\phi(W^{l,1}x))` (``block="two"`` [TP6 §9]). Parameters:
    ``U`` ``("n", d_in)`` (entries :math:`\mathcal N(0,1)`: TP6 Table 2's input variance 1),
    ``W{l}`` (or ``W{l}a``, ``W{l}b``) ``("n", "n")`` for :math:`l = 1..L`
    (:math:`\mathcal N(0,1/n)` entries under ``nn.muP()``), ``V`` ``(d_out, "n")``. Train it
    with ``nn.train(model, X, Y, steps, optimizer=..., param=nn.muP())``: the hidden
    weights carry ``lr_mult = param.lr_mult(L, optimizer)`` (Depth-μP with SGD: 1).

    Parameters
    ----------
    d_in, d_out, depth : int
        Input dimension, number of outputs, number of blocks ``L``.
    block : {"one", "two"}, default "one"
        Layers per block.
    param : DepthParametrization, default ``depth_muP()``
        :math:`(\alpha,\gamma)`: branch multiplier and the hidden learning-rate factor.
    branch_mult : float, default 1.0
        The constant :math:`a` of the branch multiplier.
    nonlin : str, tp.Nonlinearity or callable, default "relu"
        :math:`\phi` (``"relu"``, ``"abs"``, ``"identity"``, ``tp.ab_relu(a, b)``, …).
    mean_subtract : bool, default True
        Apply :math:`\mathrm{MS}` to each block's output.
    layernorm : bool, default False
        Apply ``nn.layernorm`` to a block's input (pre-LN).
    optimizer : nn optimizer or its class, default nn.SGD
        Decides the learning-rate factor (:meth:`DepthParametrization.lr_mult`); pass the
        same optimizer to ``nn.train``.
    record : sequence of (l, m), optional
        Name the Moments :math:`\langle x^l, x^m\rangle` (``0 ≤ l, m ≤ L``) as
        ``"xx{l}_{m}"``: ``run.limit().named("xx3_5")`` (feature diversity, [TP6 Def 7.6]).
    name : str, optional

    Returns
    -------
    nn.Model

    Examples
    --------
    >>> import numpy as np
    >>> from tensorprog import nn
    >>> m = nn.resnet(2, 1, depth=4, nonlin="abs")
    >>> [s.name for s in m.params.values()]
    ['U', 'W1', 'W2', 'W3', 'W4', 'V']
    >>> run = nn.train(m, [[1.0, 0.0]], [1.0], steps=1, optimizer=nn.SGD(0.5))
    >>> run.simulate(64, seed=0).outputs.shape
    (2, 1, 1)
    """
    for v, what in ((d_in, "d_in"), (d_out, "d_out")):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ProgramValueError(f"nn.resnet: {what} must be an int ≥ 1, got {v!r}")
    L = _depth(depth, "nn.resnet: depth")
    if block not in _BLOCKS:
        raise ProgramValueError(f"nn.resnet: block must be one of {_BLOCKS}, got {block!r}")
    P = depth_muP() if param is None else param
    if not isinstance(P, DepthParametrization):
        raise ProgramTypeError(
            f"nn.resnet: param must be a DepthParametrization (nn.depth_muP(), nn.depth_ode(), "
            f"nn.depth_standard(), nn.DepthParametrization(alpha, gamma)), got {param!r}"
        )
    if (
        isinstance(branch_mult, bool)
        or not isinstance(branch_mult, numbers.Real)
        or not math.isfinite(branch_mult)
    ):
        raise ProgramTypeError(
            f"nn.resnet: branch_mult must be a finite real number, got {branch_mult!r}"
        )
    for v, what in ((mean_subtract, "mean_subtract"), (layernorm, "layernorm")):
        if not isinstance(v, (bool, np.bool_)):
            raise ProgramTypeError(f"nn.resnet: {what} must be a bool, got {v!r}")
    phi = _nonlin(nonlin)
    pairs = []
    for pair in record:
        ok = (
            isinstance(pair, (tuple, list))
            and len(pair) == 2
            and all(
                isinstance(i, numbers.Integral) and not isinstance(i, bool) and 0 <= i <= L
                for i in pair
            )
        )
        if not ok:
            raise ProgramValueError(
                f"nn.resnet: record must hold pairs (l, m) of layers 0..{L}, got {pair!r}"
            )
        if (int(pair[0]), int(pair[1])) not in pairs:  # a pair named once
            pairs.append((int(pair[0]), int(pair[1])))
    lr = P.lr_mult(L, optimizer)
    c = P.multiplier(L, float(branch_mult))
    m = Model(name or f"resnet{L}_{block}")
    m.param("U", ("n", int(d_in)), init_std=math.sqrt(d_in))
    layers = [f"W{b}" for b in range(1, L + 1)]
    if block == "two":
        layers = [f"{w}{s}" for w in layers for s in ("a", "b")]
    for w in layers:
        m.param(w, ("n", "n"), lr_mult=lr)
    m.param("V", (int(d_out), "n"))
    k = 1 if block == "one" else 2
    wanted = {i for pr in pairs for i in pr}

    @m.forward
    def forward(p: Any, xi: Any) -> Any:
        x = p.U @ xi
        xs = {0: x} if 0 in wanted else {}
        for b in range(1, L + 1):
            y = _layernorm(x) if layernorm else x
            for j in range(k):
                y = phi(getattr(p, layers[(b - 1) * k + j]) @ y)
            if mean_subtract:
                y = _ms(y)
            x = x + c * y
            if b in wanted:
                xs[b] = x
        for i, j in pairs:
            inner(xs[i], xs[j], name=f"xx{i}_{j}")
        return p.V @ x

    return m


# ---------------------------------------------------------------------------------------
# Gradient diversity [TP6 §8]


@dataclass(frozen=True)
class GradientDiversity:
    r"""Correlations of consecutive blocks' gradients in the infinite-width limit.

    Attributes
    ----------
    depth : int
    layers : tuple of int
        The blocks ``l`` compared with ``l + 1``.
    rho_h, rho_h_stderr : ndarray
        :math:`\rho_h(l)=\langle\delta h^l,\delta h^{l+1}\rangle/
        \sqrt{\langle\delta h^l,\delta h^l\rangle\langle\delta h^{l+1},\delta h^{l+1}\rangle}`
        per layer, and its Monte Carlo standard error (delta method, 0 if exact).
    rho_x : ndarray
        The same for the gradients :math:`\delta x^l, \delta x^{l+1}` of the features.
    diversity : ndarray
        :math:`1-\rho_h`.
    limit : tensorprog Limit
    """

    depth: int
    layers: tuple[int, ...]
    rho_h: np.ndarray
    rho_h_stderr: np.ndarray
    rho_x: np.ndarray
    limit: Any

    @property
    def diversity(self) -> np.ndarray:
        """:math:`1 - \\rho_h` per layer."""
        return 1.0 - self.rho_h


def gradient_diversity(
    nonlin: Any,
    depth: int,
    *,
    layers: Sequence[int] | None = None,
    branch_mult: float = 1.0,
    alpha: Any = _HALF,
    **limit_kw: Any,
) -> GradientDiversity:
    r"""Gradient diversity of a residual network at initialisation, in the width limit [TP6 §8].

    TP6 §8.1–8.3: the weight :math:`W^l` is updated along :math:`\delta h^l\otimes x^{l-1}`,
    where :math:`\delta h^l = aL^{-\alpha}\,\phi'(h^l)\odot\mathrm{MS}(\delta x^l)` is the
    gradient at the pre-activation. The feature gradient :math:`\delta x^l` is continuous in
    :math:`l` as :math:`L\to\infty`, so what decorrelates neighbouring blocks' updates —
    and makes their learned features differ — is :math:`\phi'(h^l)`, with :math:`h^l`
    independent across blocks in the limit. This builds the Tensor Program of the forward
    and backward pass of :func:`resnet`'s network (one-layer blocks, MS, one input of
    norm 1, :math:`f=\langle V, x^L\rangle`, so :math:`\delta x^L = V`), and returns the
    limits of the correlations

    .. math::

        \rho_h(l)=\frac{\langle\delta h^l,\delta h^{l+1}\rangle}
        {\|\delta h^l\|\,\|\delta h^{l+1}\|},\qquad
        \rho_x(l)=\frac{\langle\delta x^l,\delta x^{l+1}\rangle}{\|\delta x^l\|\,\|\delta x^{l+1}\|}.

    With :math:`h^l` independent of :math:`h^{l+1}` and of :math:`\delta x`, the limit
    factorises as :math:`\rho_h=\rho_x\,(\mathbb E\phi'(Z))^2/\mathbb E[\phi'(Z)^2]`
    (:math:`Z` Gaussian; :math:`\rho_x\to1` as :math:`L\to\infty`). Among positively
    1-homogeneous :math:`\phi(z)=p\max(z,0)+q\min(z,0)` the ratio is
    :math:`(p+q)^2/(2(p^2+q^2))`: 1 for the identity, 1/2 for relu, and 0 — complete
    decorrelation, maximal diversity — only for :math:`|\cdot|` (:math:`q=-p`), TP6's claim
    that the absolute value maximises feature diversity [TP6 §8.3].

    Parameters
    ----------
    nonlin : str, tp.Nonlinearity or callable
    depth : int
    layers : sequence of int, optional
        Blocks ``l ∈ [1, L−1]`` to compare with ``l + 1`` (default: all).
    branch_mult, alpha :
        The branch multiplier :math:`a L^{-\alpha}` (default Depth-μP's :math:`1/\sqrt L`).
    **limit_kw :
        Passed to :meth:`tensorprog.Program.limit` (``seed``, ``samples``, ``method``).

    Returns
    -------
    GradientDiversity

    Examples
    --------
    >>> from tensorprog import nn
    >>> g = nn.gradient_diversity("identity", 4, method="exact")
    >>> bool(abs(g.rho_h[0] - g.rho_x[0]) < 1e-12)  # (Eφ')²/Eφ'² = 1
    True
    """
    L = _depth(depth, "gradient_diversity: depth")
    if L < 2:
        raise ProgramValueError(
            f"gradient_diversity: depth must be ≥ 2 (two blocks to compare), got {L}"
        )
    ls = list(range(1, L)) if layers is None else list(layers)
    for b in ls:
        if isinstance(b, bool) or not isinstance(b, numbers.Integral) or not 1 <= b <= L - 1:
            raise ProgramValueError(
                f"gradient_diversity: layers must be ints in [1, {L - 1}], got {b!r}"
            )
    phi = _nonlin(nonlin)
    c = float(branch_mult) * float(L) ** -float(_fraction(alpha, "gradient_diversity: alpha"))
    p = Program(f"gradient_diversity_{L}")
    x = p.vector("x0")
    V = p.vector("V")
    hs, xs = [], [x]
    for b in range(1, L + 1):
        h = p.matrix(f"W{b}") @ x
        hs.append(h)
        x = x + c * _ms(phi(h))
        xs.append(x)
    f = inner(V, x, name="f")
    need_h = sorted({i for b in ls for i in (b, b + 1)})
    need_x = need_h
    wrt = [hs[i - 1] for i in need_h] + [xs[i] for i in need_x]
    gs = grad(f, wrt)
    dh = dict(zip(need_h, gs[: len(need_h)]))
    dx = dict(zip(need_x, gs[len(need_h) :]))
    mom = {}
    for kind, d in (("h", dh), ("x", dx)):
        for i in need_h:
            mom[(kind, i, i)] = inner(d[i], d[i], name=f"d{kind}{i}_{i}")
        for b in ls:
            mom[(kind, b, b + 1)] = inner(d[b], d[b + 1], name=f"d{kind}{b}_{b + 1}")
    lim = p.limit(**limit_kw)

    def rho(kind: str, i: int) -> tuple[float, float]:
        a, b, cc = (mom[(kind, i, i)], mom[(kind, i + 1, i + 1)], mom[(kind, i, i + 1)])
        va, vb, vc = lim[a], lim[b], lim[cc]
        r = vc / math.sqrt(va * vb)
        # delta method; the three Moments' Monte Carlo errors combined as if independent
        ea, eb = lim.stderr(a) / va, lim.stderr(b) / vb
        se = math.sqrt(lim.stderr(cc) ** 2 + (vc / 2) ** 2 * (ea**2 + eb**2)) / math.sqrt(va * vb)
        return r, se

    rh = [rho("h", b) for b in ls]
    rx = [rho("x", b)[0] for b in ls]
    return GradientDiversity(
        L,
        tuple(ls),
        np.array([r for r, _ in rh]),
        np.array([s for _, s in rh]),
        np.array(rx),
        lim,
    )
