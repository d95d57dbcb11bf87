r"""NNGP and NTK of deep MLPs, derived through a tensor program.

:func:`kernel_program` writes *one* Tensor Program — the forward pass of an MLP on
``B`` inputs and its backward pass with transposed weights — whose Moments are the
entries of the two kernels; :func:`kernels` takes its infinite-width limit with
:meth:`tensorprog.Program.limit`. Nothing here is a hand-written kernel recursion:
the recursions of docs/concepts/kernel-limits.md come out of the Master Theorem [TP2 §4–6], [TP4 §7].

Conventions (neural-tangents' ``stax.Dense(W_std, b_std, parameterization="ntk")``
after every hidden layer and for the readout, [NT]; docs/concepts/kernel-limits.md): with ``W, b`` iid
``N(0, 1)``,

.. math::

    h^1 = \frac{\sigma_w}{\sqrt d} W^1 \xi + \sigma_b b^1, \quad
    x^l = \phi(h^l), \quad
    h^{l+1} = \frac{\sigma_w}{\sqrt n} W^{l+1} x^l + \sigma_b b^{l+1}, \quad
    f = h^{L+1} \;(\text{width } 1),

``σ_w = W_std``, ``σ_b = b_std``, ``L = depth`` hidden layers.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy

from .. import (
    BUILTINS,
    Handle,
    MonteCarloWarning,
    Nonlinearity,
    Program,
    ProgramTypeError,
    ProgramValueError,
    get_nonlinearity,
    grad,
    inner,
    lincomb,
    paused_gc,
    require_memory,
)

__all__ = ["kernel_program", "kernels", "KernelResult"]


def kernel_program(
    X: Any,
    depth: int,
    nonlin: str | Nonlinearity = "relu",
    W_std: float = 1.0,
    b_std: float = 0.0,
) -> tuple[Program, np.ndarray, np.ndarray]:
    r"""The tensor program of an MLP's forward and backward pass on ``B`` inputs.

    Parameters
    ----------
    X : array_like, shape (B, d)
        The inputs ``ξ_1, …, ξ_B`` (rows), finite real numbers.
    depth : int
        Number of hidden layers ``L ≥ 1`` (Dense + nonlinearity blocks); the
        readout is one more Dense layer.
    nonlin : str or tensorprog.Nonlinearity, default "relu"
        ``φ``: a builtin name (``"relu"``, ``"erf"``, ``"tanh"``, ``"gelu"``,
        ``"sigmoid"``, …) or any one-argument :class:`tensorprog.Nonlinearity`.
    W_std : float, default 1.0
        ``σ_w > 0``: every Dense layer multiplies by ``σ_w/√fan_in`` (NT "ntk"
        parameterization; ``fan_in = d`` for the first layer, the width ``n``
        after it).
    b_std : float, default 0.0
        ``σ_b ≥ 0``: every Dense layer adds ``σ_b · b`` with ``b`` iid ``N(0, 1)``
        (``0`` means no bias).

    Returns
    -------
    program : tensorprog.Program
    nngp : numpy.ndarray of Scalar handles, shape (B, B)
        ``nngp[i, j]`` is the scalar whose limit is ``K^{(L+1)}(ξ_i, ξ_j)``
        (the same handle at ``[i, j]`` and ``[j, i]``).
    ntk : numpy.ndarray of Scalar handles, shape (B, B)
        ``ntk[i, j]`` is the scalar whose limit is ``Θ^{(L+1)}(ξ_i, ξ_j)``.

    Notes
    -----
    **The program** (all vectors in ``ℝⁿ``, matrices ``W^l`` with iid
    ``N(0, 1/n)`` entries, i.e. ``p.matrix(var=1.0)``):

    * *Inputs.* Input data never enters as a vector [TP1 §4] (docs/concepts/tensor-programs.md): the first
      layer's preactivations ``h¹(ξ_i) = σ_w/√d · W¹ξ_i + σ_b b¹`` are ``B``
      jointly Gaussian initial vectors with coordinatewise covariance
      ``K¹_{ij} = σ_w² ξ_iᵀξ_j/d + σ_b²`` — the ``1/d`` is NT's input scaling
      (``x1 @ x2.T / n_channels``).
    * *Forward.* ``x^l_i = φ(h^l_i)``, ``h^{l+1}_i = σ_w (W^{l+1} x^l_i) + σ_b
      b^{l+1}`` with ``b^{l+1}`` an initial ``N(0, 1)`` vector independent of
      everything else (omitted when ``σ_b = 0``).
    * *Readout.* ``f(ξ) = σ_w ⟨v, x^L⟩√n + σ_b b^{L+1}`` with readout ``v`` an
      initial ``N(0, 1)`` vector, used only in the backward pass (its output is
      never formed; its second moment is the NNGP). Hence
      ``nngp_{ij} = σ_w² ⟨x^L_i, x^L_j⟩ + σ_b²`` (Moments ``⟨a, b⟩ = aᵀb/n``).
    * *Backward* (gradients scaled by ``√n`` so coordinates are ``Θ(1)``), by
      :func:`tensorprog.grad`: from the cotangent ``dx^L_i = σ_w v`` of ``x^L_i``,
      the vector–Jacobian products of ``x^l = φ(h^l)`` and ``h^l = σ_w W^l x^{l-1}
      + σ_b b^l``, layer by layer: ``dh^l_i = dx^l_i ⊙ φ'(h^l_i)`` (``φ'`` the
      almost-everywhere derivative, as backprop computes it),
      ``dx^{l-1}_i = σ_w (W^{l})ᵀ dh^l_i``, so ``∂f/∂h^l = dh^l/√n``.
    * *NTK* ``= Σ_θ ∂f(ξ_i)/∂θ · ∂f(ξ_j)/∂θ``, summed per layer: the weights of
      layer ``l`` give ``σ_w² ⟨x^{l-1}_i, x^{l-1}_j⟩ · ⟨dh^l_i, dh^l_j⟩`` and its
      bias ``σ_b² ⟨dh^l_i, dh^l_j⟩``; for ``l = 1`` the forward factor is the
      input kernel ``K¹`` (written as the Moment ``⟨h¹_i, h¹_j⟩``, whose limit is
      exactly ``K¹_{ij}``); the readout gives ``nngp_{ij}``:

      .. math::

          \Theta_{ij} = \langle h^1_i, h^1_j\rangle\langle dh^1_i, dh^1_j\rangle
          + \sum_{l=2}^{L}\big(\sigma_w^2\langle x^{l-1}_i, x^{l-1}_j\rangle
          + \sigma_b^2\big)\langle dh^l_i, dh^l_j\rangle + K^{(L+1)}_{ij}.

      In the limit ``⟨dh^l_i, dh^l_j⟩ → σ_w² Σ̇^{(l)} ⟨dh^{l+1}_i, dh^{l+1}_j⟩``
      (``⟨dh^{L+1}⟩ := 1``) and this is the unrolled recursion
      ``Θ^{(l+1)} = K^{(l+1)} + σ_w² Σ̇^{(l)} Θ^{(l)}`` [TP2 §4] (docs/concepts/kernel-limits.md).

    The readout is independent of the forward pass and centred, so the program is
    BP-like and every ``Ż`` of the backward pass is zero (gradient independence,
    [TP2 Def A.3, Thm 7.2]; docs/concepts/master-theorem.md): ``Z^{dx^{l-1}} = Ẑ^{W^{l\top} dh^l}``, and each backward
    expectation is the product of a Gaussian moment and a bivariate
    ``𝔼[φ'(u)φ'(v)]``.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorprog.nn.kernels import kernel_program
    >>> X = np.array([[1.0, 0.0], [0.6, 0.8]])
    >>> p, nngp, ntk = kernel_program(X, depth=2)
    >>> p.definition(p["dx1_0"]).transpose     # backward: W²ᵀ dh²(ξ_0)
    True
    >>> lim = p.limit()
    >>> round(lim[nngp[0, 0]], 12), round(lim[ntk[0, 0]], 12)
    (0.125, 0.375)
    >>> nngp[0, 1] is nngp[1, 0]
    True
    """
    X, depth, phi, W_std, b_std = _validate(X, depth, nonlin, W_std, b_std, "kernel_program")
    with paused_gc():  # B²·(2·depth + 3) records: see tensorprog.core._gc
        return _build(X, depth, phi, W_std, b_std)


def _build(
    X: np.ndarray, depth: int, phi: Nonlinearity, W_std: float, b_std: float
) -> tuple[Program, np.ndarray, np.ndarray]:
    B, d = X.shape
    w2, b2 = W_std * W_std, b_std * b_std
    K1 = w2 * (X @ X.T) / d + b2
    K1 = (K1 + K1.T) / 2

    p = Program(f"mlp_kernels_{phi.name}_L{depth}")
    # Forward pass: hs[k][i] = h^{k+1}(ξ_i), xs[k][i] = x^{k+1}(ξ_i).
    hs = [p.vectors("h1", cov=K1)]
    xs = [[phi(h, name=f"x1_{i}") for i, h in enumerate(hs[0])]]
    # h = σ_w·(W x) + σ_b·b as one transparent (linear) Nonlin.
    a, c = sympy.symbols("a c", real=True)
    dense = Nonlinearity("dense", W_std * a + b_std * c, [a, c], opaque=False)
    dense0 = Nonlinearity("dense", W_std * a, [a], opaque=False)
    Ws = []
    for ell in range(2, depth + 1):
        W = p.matrix(f"W{ell}", var=1.0)
        Ws.append(W)
        b = p.vector(f"b{ell}") if b_std else None
        layer = []
        for i, x in enumerate(xs[-1]):
            Wx = W.matmul(x, name=f"W{ell}x{ell - 1}_{i}")
            layer.append(
                dense(Wx, b, name=f"h{ell}_{i}")
                if b is not None
                else dense0(Wx, name=f"h{ell}_{i}")
            )
        hs.append(layer)
        xs.append([phi(h, name=f"x{ell}_{i}") for i, h in enumerate(layer)])
    # Backward pass (the first one: readout v independent of the forward pass), by
    # tp.grad: the cotangent of x^L is σ_w v, then one vector–Jacobian product per layer
    # and input, layer by layer (the program order of the kernels' Moments below).
    v = p.vector("v")
    dx = [lincomb([(W_std, v)], name=f"dx{depth}")] * B  # n^{1/2} ∂f/∂x^L, every input
    dhs: list[list[Any]] = [[] for _ in range(depth)]
    for ell in range(depth, 0, -1):
        dhs[ell - 1] = [
            grad(xs[ell - 1][i], hs[ell - 1][i], cotangent=dx[i], names=f"dh{ell}_{i}")
            for i in range(B)
        ]
        if ell > 1:
            dx = [
                grad(hs[ell - 1][i], xs[ell - 2][i], cotangent=dh, names=f"dx{ell - 1}_{i}")
                for i, dh in enumerate(dhs[ell - 1])
            ]

    # Moments and the kernels, for i ≤ j (one ScalarFn per kernel entry).
    nngp_fn, ntk_fn = _readout_sums(depth, w2, b2)
    nngp = np.empty((B, B), dtype=object)
    ntk = np.empty((B, B), dtype=object)
    for i in range(B):
        for j in range(i, B):
            k1 = inner(hs[0][i], hs[0][j], name=f"K1_{i}_{j}")
            DF = []
            for k in range(depth):
                DF.append(inner(dhs[k][i], dhs[k][j], name=f"D{k + 1}_{i}_{j}"))
                DF.append(inner(xs[k][i], xs[k][j], name=f"F{k + 1}_{i}_{j}"))
            nngp[i, j] = nngp[j, i] = nngp_fn(DF[-1], name=f"nngp_{i}_{j}")
            ntk[i, j] = ntk[j, i] = ntk_fn(k1, *DF, name=f"ntk_{i}_{j}")
    return p, nngp, ntk


def _readout_sums(depth: int, w2: float, b2: float) -> tuple[Nonlinearity, Nonlinearity]:
    """``nngp(F^L) = σ_w² F^L + σ_b²`` and ``ntk(K¹, D¹, F¹, …, D^L, F^L)``.

    ``ntk = Σ_{l=1}^{L} K^l D^l + K^{L+1}`` with ``K^{l} = σ_w² F^{l-1} + σ_b²`` for
    ``l ≥ 2`` (weights + bias of layer ``l``) and ``K¹`` the input kernel.
    """
    K1 = sympy.Symbol("K1", real=True)
    D = sympy.symbols(f"D1:{depth + 1}", real=True)
    F = sympy.symbols(f"F1:{depth + 1}", real=True)
    K = [K1] + [w2 * F[k] + b2 for k in range(depth)]  # K[k] = K^{(k+1)}
    body = sum((K[k] * D[k] for k in range(depth)), K[depth])
    params = [K1] + [s for k in range(depth) for s in (D[k], F[k])]
    nngp = Nonlinearity("nngp", K[depth], [], [F[depth - 1]], opaque=False)
    ntk = Nonlinearity("ntk", body, [], params, opaque=False)
    return nngp, ntk


@dataclass(frozen=True, eq=False)
class KernelResult:
    r"""NNGP and NTK with the method and the error of every entry
    (``kernels(..., return_info=True)``).

    Attributes
    ----------
    nngp, ntk : numpy.ndarray, shape (B, B)
        The kernels.
    method : dict of str to numpy.ndarray
        ``method["nngp"]``, ``method["ntk"]``: (B, B) arrays of ``"exact"``,
        ``"quadrature"`` or ``"montecarlo"`` — the least precise method among the
        expectations the entry depends on (:meth:`tensorprog.Limit.method`).
    error : dict of str to numpy.ndarray
        (B, B) estimated absolute errors: the Monte Carlo standard error of an entry
        computed by Monte Carlo; otherwise the first-order sum
        :math:`\sum_m |\partial\,\mathrm{entry}/\partial m|\,e_m` of the error
        estimates :math:`e_m` of the entry's Moments (0 for exact ones; for quadrature
        the difference of two rules, usually far above the actual error).
    stderr : dict of str to numpy.ndarray
        (B, B) Monte Carlo standard errors (0 where no Monte Carlo was used).
    limit : tensorprog.Limit
        The limit of :func:`kernel_program`'s program, for everything else.

    Iterating yields ``nngp, ntk``, so ``nngp, ntk = kernels(..., return_info=True)``
    unpacks like the plain result.
    """

    nngp: np.ndarray
    ntk: np.ndarray
    method: dict[str, np.ndarray]
    error: dict[str, np.ndarray]
    stderr: dict[str, np.ndarray]
    limit: Any

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.nngp, self.ntk))

    @property
    def montecarlo(self) -> int:
        """Number of distinct entries (``i ≤ j``, both kernels) computed by Monte Carlo."""
        iu = np.triu_indices(self.nngp.shape[0])
        return int(sum(np.count_nonzero(m[iu] == "montecarlo") for m in self.method.values()))


def kernels(
    X: Any,
    depth: int,
    nonlin: str | Nonlinearity = "relu",
    W_std: float = 1.0,
    b_std: float = 0.0,
    *,
    return_info: bool = False,
    **limit_kw: Any,
) -> tuple[np.ndarray, np.ndarray] | KernelResult:
    r"""NNGP and NTK of a deep MLP as the infinite-width limit of its tensor program.

    Builds :func:`kernel_program` and evaluates ``program.limit(**limit_kw)``.

    Parameters
    ----------
    X : array_like, shape (B, d)
        Inputs (rows), finite.
    depth : int
        Number of hidden layers ``L ≥ 1``.
    nonlin : str or tensorprog.Nonlinearity, default "relu"
        The activation ``φ`` (a builtin name or a one-argument nonlinearity).
    W_std : float, default 1.0
        ``σ_w > 0`` of every Dense layer (NT ``parameterization="ntk"``: the layer
        is ``σ_w/√fan_in · W x + σ_b b`` with ``W, b`` iid ``N(0, 1)``).
    b_std : float, default 0.0
        ``σ_b ≥ 0`` of every Dense layer (0: no bias).
    return_info : bool, default False
        Return a :class:`KernelResult` with the method and the estimated error of
        every entry instead of the pair of arrays.
    **limit_kw
        Passed to :meth:`tensorprog.Program.limit` (``method``, ``samples``,
        ``seed``, …).

    Returns
    -------
    nngp, ntk : numpy.ndarray, shape (B, B)
        ``K^{(L+1)}`` and ``Θ^{(L+1)}`` on the inputs; or, with ``return_info=True``,
        a :class:`KernelResult` (which also unpacks as ``nngp, ntk``).

    Warns
    -----
    tensorprog.MonteCarloWarning
        With the default ``method="auto"``, when some entry could not be computed
        deterministically (exact form or quadrature) and was estimated by Monte
        Carlo: the warning names how many entries and the largest standard error.

    Notes
    -----
    With ``Σ⁽⁰⁾(ξ, ξ') = ξᵀξ'/d`` (the input is divided by its dimension ``d``),
    ``K⁽¹⁾ = σ_w² Σ⁽⁰⁾ + σ_b²``, ``Θ⁽¹⁾ = K⁽¹⁾`` and, for ``l = 1, …, L``, with
    ``(u, v)`` centred Gaussian with covariance ``K⁽ˡ⁾`` on ``{ξ, ξ'}``:

    .. math::

        K^{(l+1)} = \sigma_w^2\,\mathbb E[\phi(u)\phi(v)] + \sigma_b^2,\qquad
        \Theta^{(l+1)} = K^{(l+1)}
            + \sigma_w^2\,\mathbb E[\phi'(u)\phi'(v)]\,\Theta^{(l)},

    and ``nngp = K^{(L+1)}``, ``ntk = Θ^{(L+1)}`` ([TP2 §4]; docs/concepts/kernel-limits.md; neural-tangents'
    ``stax.serial([Dense(·, W_std, b_std), act] * depth, Dense(1, W_std, b_std))``,
    ``kernel_fn(X, None, ("nngp", "ntk"))``). These values are *not* computed
    from this recursion: they are the limits of the program's Moments, and the
    recursion is what the Master Theorem makes of them. ReLU and erf kernels are
    exact (arc-cosine and Williams closed forms); other activations (tanh, gelu,
    sigmoid, …) use quadrature over the one or two Gaussians of each expectation,
    at any depth and gain: the rules are scaled to the covariance (docs: *How limits
    are evaluated*), so Monte Carlo is a last resort — and never a silent one
    (``return_info=True`` gives every entry's method and error).

    Raises
    ------
    tensorprog.ProgramTypeError, tensorprog.ProgramValueError
        For invalid ``X``, ``depth``, ``nonlin``, ``W_std`` or ``b_std``; the
        message names the argument.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorprog.nn.kernels import kernels
    >>> X = np.array([[1.0, 0.0], [0.6, 0.8], [-1.0, 1.0]])
    >>> nngp, ntk = kernels(X, depth=2, nonlin="relu", W_std=1.5, b_std=0.1)
    >>> np.round(nngp[0], 8)
    array([1.45773438, 1.07713069, 0.71741663])
    >>> np.round(ntk[0], 8)
    array([4.34195312, 2.25999961, 0.59056138])
    >>> res = kernels(X, depth=2, nonlin="relu", W_std=1.5, b_std=0.1, return_info=True)
    >>> str(res.method["ntk"][0, 1]), float(res.error["ntk"][0, 1]), res.montecarlo
    ('exact', 0.0, 0)
    """
    X, depth, phi, W_std, b_std = _validate(X, depth, nonlin, W_std, b_std, "kernels")
    if not isinstance(return_info, bool):
        raise ProgramTypeError(f"kernels: return_info must be a bool, got {return_info!r}")
    with paused_gc():  # one pause for building and the limit (see tensorprog.core._gc)
        p, nngp_h, ntk_h = kernel_program(X, depth, phi, W_std, b_std)
        lim = p.limit(**limit_kw)
    res = _result(lim, X.shape[0], nngp_h, ntk_h, with_errors=return_info)
    if limit_kw.get("method", "auto") == "auto" and res.montecarlo:
        iu = np.triu_indices(X.shape[0])
        worst = max(float(s[iu].max()) for s in res.stderr.values())
        warnings.warn(
            f"kernels: {res.montecarlo} of {2 * len(iu[0])} kernel entries were estimated by "
            f"Monte Carlo (largest standard error {worst:.3g}): some expectation has no "
            f"exact form and quadrature did not reach its tolerance; use "
            f"return_info=True for every entry's method and error",
            MonteCarloWarning,
            stacklevel=2,
        )
    return res if return_info else (res.nngp, res.ntk)


def _result(
    lim: Any, B: int, nngp_h: np.ndarray, ntk_h: np.ndarray, with_errors: bool
) -> KernelResult:
    """Values, methods, standard errors and (with ``with_errors``) errors of both kernels:
    the limit's own, which carry the first-order errors of the Moments through the
    readout sums (``Σ_m |∂entry/∂m| e_m``). Tables are read once (a B = 64, depth-10
    program has 52 000 scalars)."""
    values, methods, stderrs = lim.values, lim.methods, lim.stderrs
    errors = lim.errors if with_errors else {}
    value = {k: np.empty((B, B)) for k in ("nngp", "ntk")}
    method = {k: np.empty((B, B), dtype=object) for k in ("nngp", "ntk")}
    stderr = {k: np.zeros((B, B)) for k in ("nngp", "ntk")}
    error = {k: np.zeros((B, B)) for k in ("nngp", "ntk")}
    for i in range(B):
        for j in range(i, B):
            for kind, h in (("nngp", nngp_h[i, j]), ("ntk", ntk_h[i, j])):
                name = h.name
                value[kind][i, j] = value[kind][j, i] = values[name]
                method[kind][i, j] = method[kind][j, i] = methods[name]
                stderr[kind][i, j] = stderr[kind][j, i] = stderrs[name]
                if with_errors:
                    error[kind][i, j] = error[kind][j, i] = errors[name]
    return KernelResult(
        value["nngp"],
        value["ntk"],
        {k: v.astype(str) for k, v in method.items()},
        error,
        stderr,
        lim,
    )


# ---------------------------------------------------------------------------------------
# validation


def _validate(
    X: Any, depth: Any, nonlin: Any, W_std: Any, b_std: Any, where: str
) -> tuple[np.ndarray, int, Nonlinearity, float, float]:
    if isinstance(X, Handle):
        raise ProgramTypeError(f"{where}: X must be a (B, d) array of inputs, got a program handle")
    try:
        arr = np.asarray(X)
    except Exception as exc:  # noqa: BLE001 - any failure means "not an array"
        raise ProgramTypeError(
            f"{where}: X must be a (B, d) array of real numbers ({exc})"
        ) from None
    if (
        arr.dtype == object
        or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool)
        or np.iscomplexobj(arr)
    ):
        raise ProgramTypeError(
            f"{where}: X must be a (B, d) array of real numbers, got dtype {arr.dtype}"
        )
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ProgramValueError(
            f"{where}: X must be a non-empty 2-D array (B inputs as rows, d features), "
            f"got shape {arr.shape}"
        )
    arr = arr.astype(float)
    if not np.all(np.isfinite(arr)):
        raise ProgramValueError(f"{where}: X must be finite; it has NaN or inf entries")
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral):
        raise ProgramTypeError(f"{where}: depth must be an int ≥ 1, got {depth!r}")
    if depth < 1:
        raise ProgramValueError(f"{where}: depth must be an int ≥ 1 (hidden layers), got {depth}")
    if isinstance(nonlin, str) and nonlin not in BUILTINS:
        raise ProgramValueError(
            f"{where}: nonlin: unknown nonlinearity {nonlin!r}; valid names: "
            f"{', '.join(sorted(BUILTINS))}, or a tensorprog.Nonlinearity"
        )
    if not isinstance(nonlin, (str, Nonlinearity)):
        raise ProgramTypeError(
            f"{where}: nonlin must be a nonlinearity name or a tensorprog.Nonlinearity, "
            f"got {type(nonlin).__name__}"
        )
    phi = get_nonlinearity(nonlin)
    if phi.arity != 1 or phi.nparams != 0:
        raise ProgramValueError(
            f"{where}: nonlin must be a function of one argument without parameters, "
            f"got {phi.name} with {phi.arity} argument(s) and {phi.nparams} parameter(s)"
        )
    _real_on_the_line(phi, where)
    W_std = _real(W_std, "W_std", where)
    if not W_std > 0:
        raise ProgramValueError(f"{where}: W_std must be > 0, got {W_std}")
    b_std = _real(b_std, "b_std", where)
    if b_std < 0:
        raise ProgramValueError(f"{where}: b_std must be ≥ 0, got {b_std}")
    _check_input_kernel(arr, W_std, b_std, where)
    _check_memory(arr.shape[0], int(depth), where)
    return arr, int(depth), phi, W_std, b_std


def _check_input_kernel(X: np.ndarray, W_std: float, b_std: float, where: str) -> None:
    """``K¹ = σ_w² XXᵀ/d + σ_b²`` (the first layer's covariance) must be finite."""
    with np.errstate(all="ignore"):
        w2, b2 = W_std * W_std, b_std * b_std
        sq = np.einsum("ij,ij->i", X, X) / X.shape[1]  # the diagonal bounds |K¹_ij|
        k1 = w2 * sq.max() + b2
    if not math.isfinite(k1):
        big = (
            "the inputs X"
            if not math.isfinite(sq.max())
            else "W_std or the inputs X"
            if not math.isfinite(w2 * sq.max())
            else "b_std"
        )
        raise ProgramValueError(
            f"{where}: the input kernel K¹ = W_std²·ξᵀξ/d + b_std² overflows float64 "
            f"(W_std={W_std:g}, b_std={b_std:g}, max ξᵀξ/d={sq.max():g}); "
            f"scale {big} down"
        )


#: Peak bytes per instruction of the kernel program through its limit (program,
#: derivation, plan, values), measured with ``ru_maxrss`` at B = 60…200, depth 2–4:
#: ~2.0 KiB for relu (closed forms), ~3.9 KiB for tanh (quadrature); the larger is used.
_BYTES_PER_INSTRUCTION = 4096


def kernel_program_size(B: int, depth: int) -> int:
    """Instructions of :func:`kernel_program` on ``B`` inputs, to within ``O(B·depth)``:
    ``B(B+1)/2`` kernel entries of ``2·depth + 3`` scalars each (two Moments per layer,
    the input kernel and the two readouts)."""
    return B * (B + 1) // 2 * (2 * depth + 3)


def _check_memory(B: int, depth: int, where: str) -> None:
    """Refuse, before building anything, a kernel program that would not fit in memory."""
    size = kernel_program_size(B, depth)
    require_memory(
        f"{where} on B={B} inputs at depth {depth} ({size:,} instructions)",
        _BYTES_PER_INSTRUCTION * size,
        "X",
        "pass fewer inputs (rows of X) at a time, e.g. blocks of the kernel matrix",
    )


#: Where φ is probed: a preactivation is Gaussian, so it takes every real value (the grid
#: avoids 0, where e.g. log|h| has an integrable singularity).
_PROBE = np.linspace(-8.0, 8.0, 64)


def _real_on_the_line(phi: Nonlinearity, where: str) -> None:
    """Refuse a ``φ`` that is not real and finite on the real line (e.g. ``sqrt``): its
    kernels would be integrals of complex or undefined values."""
    with np.errstate(all="ignore"):
        vals = np.asarray(phi.numpy(_PROBE))
    bad = np.iscomplexobj(vals) and np.any(vals.imag != 0)
    bad_at = np.flatnonzero(~np.isfinite(vals.real)) if not bad else np.flatnonzero(vals.imag != 0)
    if bad or bad_at.size:
        h = float(_PROBE[bad_at[0]])
        raise ProgramValueError(
            f"{where}: nonlin {phi.name} is not a finite real number at h = {h:g}; a "
            f"Gaussian preactivation takes every real value, so the kernels need a φ "
            f"defined on the whole real line (e.g. relu, tanh, gelu, or a custom "
            f"tensorprog.Nonlinearity)"
        )


def _real(x: Any, arg: str, where: str) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise ProgramTypeError(f"{where}: {arg} must be a real number, got {x!r}")
    f = float(x)
    if not math.isfinite(f):
        raise ProgramValueError(f"{where}: {arg} must be finite, got {f}")
    return f
