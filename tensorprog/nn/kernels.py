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

import numbers
from typing import Any

import numpy as np

from .. import (
    Nonlinearity,
    Program,
    ProgramTypeError,
    ProgramValueError,
    paused_gc,
)
from .stax import (
    Dense,
    Elementwise,
    KernelResult,
    _check_input_kernel,
    _check_memory,
    _check_nonlin,
    _entry_pairs,
    _kernels,
    _real,
    _stack_inputs,
)
from .stax import _build as build

__all__ = ["kernel_program", "kernels", "KernelResult"]


def kernel_program(
    X: Any,
    X2: Any = None,
    *positional: Any,
    depth: int | None = None,
    nonlin: str | Nonlinearity = "relu",
    W_std: float = 1.0,
    b_std: float = 0.0,
) -> tuple[Program, np.ndarray, np.ndarray]:
    r"""The tensor program of an MLP's forward and backward pass on ``B`` inputs.

    Parameters
    ----------
    X : array_like, shape (B, d)
        The inputs ``ξ_1, …, ξ_B`` (rows), finite real numbers.
    X2 : array_like, shape (B2, d), optional
        Second inputs: the program holds only the ``B × B2`` cross-kernel entries
        (the forward and backward pass run on all ``B + B2`` inputs). ``None``: the
        ``B × B`` kernel of ``X``.
    *positional
        ``depth, nonlin, W_std, b_std`` may also be given positionally, after ``X2`` or
        in place of it: an integer second argument is the depth (the former signature
        ``kernel_program(X, depth, nonlin, W_std, b_std)``).
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
    nngp : numpy.ndarray of Scalar handles, shape (B, B) or (B, B2)
        ``nngp[i, j]`` is the scalar whose limit is ``K^{(L+1)}(ξ_i, ξ_j)``
        (without ``X2``, the same handle at ``[i, j]`` and ``[j, i]``).
    ntk : numpy.ndarray of Scalar handles, shape (B, B) or (B, B2)
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
    Xs, B1, depth, phi, W, b = _arguments(
        "kernel_program", X, X2, positional, depth, nonlin, W_std, b_std
    )
    pairs = _entry_pairs(Xs.shape[0], B1)
    _check_size("kernel_program", Xs, B1, pairs, depth)
    with paused_gc():  # B²·(2·depth + 3) records: see tensorprog.core._gc
        return _build(Xs, B1, pairs, depth, phi, W, b)


def _build(
    X: np.ndarray,
    B1: int,
    pairs: list[tuple[int, int]],
    depth: int,
    phi: Nonlinearity,
    W_std: float,
    b_std: float,
) -> tuple[Program, np.ndarray, np.ndarray]:
    """The MLP as ``stax.serial(*[Dense(W_std, b_std), Elementwise(φ)] * depth,
    Dense(W_std, b_std))``, written by the one program builder of
    :mod:`tensorprog.nn.stax`."""

    return build(*_network(depth, phi, W_std, b_std), X, B1, pairs, _name(phi, depth))


def _network(depth: int, phi: Nonlinearity, W_std: float, b_std: float) -> tuple[list, Dense]:
    """``[Dense(W_std, b_std), Elementwise(φ)] * depth`` and the readout ``Dense``."""
    return [Dense(W_std, b_std), Elementwise(phi)] * depth, Dense(W_std, b_std)


def _name(phi: Nonlinearity, depth: int) -> str:
    return f"mlp_kernels_{phi.name}_L{depth}"


def kernels(
    X: Any,
    X2: Any = None,
    *positional: Any,
    depth: int | None = None,
    nonlin: str | Nonlinearity = "relu",
    W_std: float = 1.0,
    b_std: float = 0.0,
    return_info: bool = False,
    batch_size: int | None = None,
    pairwise: bool = True,
    **limit_kw: Any,
) -> tuple[np.ndarray, np.ndarray] | KernelResult:
    r"""NNGP and NTK of a deep MLP as the infinite-width limit of its tensor program.

    Builds :func:`kernel_program` and evaluates ``program.limit(**limit_kw)``.

    Parameters
    ----------
    X : array_like, shape (B, d)
        Inputs (rows), finite.
    X2 : array_like, shape (B2, d), optional
        Second inputs: return the ``B × B2`` cross-kernels ``K(ξ_i, ξ'_j)`` (neural-
        tangents' ``kernel_fn(x1, x2)``); the program holds only those entries.
        ``None``: the ``B × B`` kernels of ``X``.
    *positional
        ``depth, nonlin, W_std, b_std`` may also be given positionally, after ``X2`` or
        in place of it: an integer second argument is the depth, so the former
        signature ``kernels(X, depth, nonlin, W_std, b_std)`` still works.
    depth : int
        Number of hidden layers ``L ≥ 1`` (required).
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
    batch_size : int, optional
        Kernel entries evaluated together (neural-tangents' ``nt.batch``), default
        8192: memory grows linearly with it.
    pairwise : bool, default True
        Entry by entry through a compiled limit (see Notes); ``False``: the limit of
        :func:`kernel_program`'s one program holding every entry.
    **limit_kw
        Passed to :meth:`tensorprog.Program.limit` (``method``, ``degree``, and
        ``samples``, ``seed``, … for entries that need Monte Carlo);
        ``progress=True`` also shows a progress bar over the kernel entries.

    Returns
    -------
    nngp, ntk : numpy.ndarray, shape (B, B) or (B, B2)
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
    ``kernel_fn(X, X2, ("nngp", "ntk"))``). These values are *not* computed
    from this recursion: they are the limits of the program's Moments, and the
    recursion is what the Master Theorem makes of them. ReLU and erf kernels are
    exact (arc-cosine and Williams closed forms); other activations (tanh, gelu,
    sigmoid, …) use quadrature over the one or two Gaussians of each expectation,
    at any depth and gain: the rules are scaled to the covariance (docs: *How limits
    are evaluated*), so Monte Carlo is a last resort — and never a silent one
    (``return_info=True`` gives every entry's method and error). Other architectures
    (residual blocks, LayerNorm): :mod:`tensorprog.nn.stax`.

    Entry ``(i, j)`` of every layer depends only on ``ξ_i, ξ_j``: :func:`kernel_program`
    on those two inputs holds that entry (and the diagonal entries ``(i, i)``, ``(j, j)``,
    whose per-input Moments its laws need anyway), and its limit depends on the inputs
    only through their covariance ``K¹``. That program is derived and
    planned once per ``(depth, nonlin, W_std, b_std, method)``
    (:func:`tensorprog.compile_limit`) and evaluated for every entry with numpy,
    ``batch_size`` entries at a time (:meth:`tensorprog.nn.stax.Layer.kernel_fn`): a
    repeated call on new inputs costs numpy evaluation only, and ``B`` in the
    thousands fits in memory (the kernels and one block: estimated before anything is
    allocated).

    Raises
    ------
    tensorprog.ProgramTypeError, tensorprog.ProgramValueError
        For invalid ``X``, ``X2``, ``depth``, ``nonlin``, ``W_std``, ``b_std``,
        ``batch_size`` or ``pairwise``; the message names the argument.
    tensorprog.ResourceError
        When the kernels and a block of entries do not fit in the memory this process
        may use (``knob`` ``"X"``: fewer inputs, or ``"batch_size"``).

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
    >>> np.round(kernels(X[:1], X[1:], depth=2, W_std=1.5, b_std=0.1)[1], 8)  # cross-kernel
    array([[2.25999961, 0.59056138]])
    """
    Xs, B1, depth, phi, W, b = _arguments("kernels", X, X2, positional, depth, nonlin, W_std, b_std)
    body, readout = _network(depth, phi, W, b)
    res = _kernels(
        ("mlp", depth, phi, W, b),
        body,
        readout,
        Xs,
        B1,
        _name(phi, depth),
        "kernels",
        "X",
        return_info,
        batch_size,
        pairwise,
        limit_kw,
    )
    return res if return_info else (res.nngp, res.ntk)


# ---------------------------------------------------------------------------------------
# validation


def _arguments(
    where: str,
    X: Any,
    X2: Any,
    positional: tuple[Any, ...],
    depth: Any,
    nonlin: Any,
    W_std: Any,
    b_std: Any,
) -> tuple[np.ndarray, int, int, Nonlinearity, float, float]:
    """Validated ``(X stacked with X2, B, depth, φ, W_std, b_std)`` of
    ``kernels``/``kernel_program``; ``depth, nonlin, W_std, b_std`` may come
    positionally (an integer ``X2`` is the depth: the former signature)."""
    if isinstance(X2, numbers.Integral) and not isinstance(X2, (bool, np.bool_)):
        positional, X2 = (X2, *positional), None
    names = ("depth", "nonlin", "W_std", "b_std")
    if len(positional) > len(names):
        raise ProgramTypeError(
            f"{where}: takes at most {len(names)} positional arguments after X and X2 "
            f"({', '.join(names)}), got {len(positional)}"
        )
    given = {"depth": depth, "nonlin": nonlin, "W_std": W_std, "b_std": b_std}
    defaults = {"depth": None, "nonlin": "relu", "W_std": 1.0, "b_std": 0.0}
    for name, value in zip(names, positional):
        if given[name] is not defaults[name] and given[name] != defaults[name]:
            raise ProgramTypeError(f"{where}: {name} given both positionally and by keyword")
        given[name] = value
    if given["depth"] is None:
        raise ProgramTypeError(
            f"{where}: depth (the number of hidden layers, an int ≥ 1) is required"
        )
    Xs, B = _stack_inputs(X, X2, where, ("X", "X2"))
    depth = given["depth"]
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral):
        raise ProgramTypeError(f"{where}: depth must be an int ≥ 1, got {depth!r}")
    if depth < 1:
        raise ProgramValueError(f"{where}: depth must be an int ≥ 1 (hidden layers), got {depth}")
    phi = _check_nonlin(given["nonlin"], where)
    W = _real(given["W_std"], "W_std", where)
    if not W > 0:
        raise ProgramValueError(f"{where}: W_std must be > 0, got {W}")
    b = _real(given["b_std"], "b_std", where)
    if b < 0:
        raise ProgramValueError(f"{where}: b_std must be ≥ 0, got {b}")
    _check_input_kernel(Xs, W, b, where)
    return Xs, B, int(depth), phi, W, b


def _check_size(
    where: str, Xs: np.ndarray, B: int, pairs: list[tuple[int, int]], depth: int
) -> None:
    """Refuse a whole-batch kernel program that would not fit in memory (naming ``X``)."""
    rows = f"B={B}" if Xs.shape[0] == B else f"B={B}×{Xs.shape[0] - B}"
    _check_memory(len(pairs), depth + 1, f"{where} on {rows} inputs at depth {depth}", "X")


def kernel_program_size(B: int, depth: int) -> int:
    """Instructions of :func:`kernel_program` on ``B`` inputs, to within ``O(B·depth)``:
    ``B(B+1)/2`` kernel entries of ``2·depth + 3`` scalars each (two Moments per layer,
    the input kernel and the two readouts)."""
    return B * (B + 1) // 2 * (2 * depth + 3)
