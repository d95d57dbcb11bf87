r"""neural-tangents' ``stax`` vocabulary, compiled to one tensor program per call.

A network is described with layer combinators — :func:`serial`, :func:`Dense`,
nonlinearities (:func:`Relu`, :func:`Erf`, :func:`Gelu`, …, or any
:class:`tensorprog.Nonlinearity` through :func:`Elementwise`), :func:`LayerNorm`, and the
residual plumbing :func:`FanOut`, :func:`parallel`, :func:`FanInSum`, :func:`Identity` —
and its infinite-width NNGP and NTK are obtained as in :func:`tensorprog.nn.kernels`:
:meth:`Layer.program` writes the network's forward pass on the inputs and its backward
pass (:func:`tensorprog.grad`, one vector–Jacobian product per layer) as *one* tensor
program whose Moments are the kernel entries, and :meth:`Layer.kernel_fn` takes its limit
(the Master Theorem [TP2 §4–6], [TP4 §7]). No layer carries a kernel rule: the
recursions of neural-tangents ([NT] Novak et al. 2020) are what the limit makes of
the program.

Conventions ([NT] ``parameterization="ntk"``): every weight and bias is iid
``N(0, 1)`` and the scales sit in the forward pass. ``Dense(W_std, b_std)`` on a
vector ``x`` of the width-``n`` network is ``W_std/√n · W x + b_std · b``; on the
inputs ``ξ ∈ ℝᵈ`` it is ``W_std/√d · W ξ + b_std · b`` (NT's ``x1 @ x2.T / d``). Every
hidden layer is infinitely wide; the network's last layer is a ``Dense``, the readout,
and the kernels are those of one output coordinate (the output dimension of NT's
``Dense(out_dim, …)`` does not change them).

The NTK is ``Σ_θ ∂f(ξ)/∂θ · ∂f(ξ')/∂θ`` summed per Dense layer ``l`` with input ``x``
and output ``h``: ``(W_std² ⟨x_i, x_j⟩ + b_std²)·⟨dh_i, dh_j⟩`` with ``dh = √n ∂f/∂h``
(the input kernel ``W_std² ξ_iᵀξ_j/d + b_std²`` for a layer that reads the inputs, and
``dh = 1`` for the readout), as in :func:`tensorprog.nn.kernel_program`.

Training: :meth:`Layer.model` compiles the same network into an
:class:`~tensorprog.nn.Model` (one weight ``W{l}`` and bias ``b{l}`` per Dense layer,
``W_std``/``b_std`` as their ``init_std``) for :func:`tensorprog.nn.train`, whose
feature-learning runs (μP [TP5 Table 3]) have a limit; the same forward is written by a
second writer of the layers (a layer checks what flows into it and asks the writer — the
kernel program's or the model's — to write itself).

References
----------
[NT] R. Novak, L. Xiao, J. Hron, J. Lee, A. A. Alemi, J. Sohl-Dickstein, S. S. Schoenholz,
*Neural Tangents: Fast and Easy Infinite Neural Networks in Python*, ICLR 2020.
[TP2] G. Yang, *Tensor Programs II: Neural Tangent Kernel for Any Architecture*, 2020.
[TP4] G. Yang, E. Hu, *Feature Learning in Infinite-Width Neural Networks*, 2021.
[TP5] G. Yang et al., *Tensor Programs V: Tuning Large Neural Networks via Zero-Shot
Hyperparameter Transfer*, NeurIPS 2021, arXiv:2203.03466.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections import OrderedDict, namedtuple
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy

from .. import (
    BUILTINS,
    Handle,
    MethodUnavailableError,
    MonteCarloWarning,
    Nonlinearity,
    Program,
    ProgramTypeError,
    ProgramValueError,
    Vector,
    ab_relu,
    compile_limit,
    get_nonlinearity,
    grad,
    inner,
    leaky_relu,
    lincomb,
    monomial,
    paused_gc,
    polynomial,
    rbf,
    rectified_monomial,
    require_memory,
)
from .model import Model
from .norms import layernorm

__all__ = [
    "Layer",
    "serial",
    "parallel",
    "Dense",
    "Elementwise",
    "Identity",
    "FanOut",
    "FanInSum",
    "LayerNorm",
    "Relu",
    "LeakyRelu",
    "ABRelu",
    "Abs",
    "Sign",
    "Erf",
    "Sigmoid_like",
    "Sigmoid",
    "Tanh",
    "Gelu",
    "Sin",
    "Cos",
    "Exp",
    "Rbf",
    "Monomial",
    "RectifiedMonomial",
    "Polynomial",
]


# ---------------------------------------------------------------------------------------
# What flows between layers while the program is written


class _Data:
    """The raw inputs ``ξ`` (rows of X): not vectors of the program [TP1 §4]; only a
    :func:`Dense` layer can read them."""


_DATA = _Data()


@dataclass
class _Vecs:
    """One vector per input, named ``f"{base}_{i}"``."""

    base: str
    vecs: list[Vector]


@dataclass
class _Tape:
    """One layer applied to every input: ``outs[i]`` is a function of the vectors
    ``ins[i]`` (what the backward pass differentiates). ``is_sum``: ``outs[i]`` is the
    sum of ``ins[i]``, whose cotangents are then ``outs[i]``'s own (``tp.grad`` with
    respect to several inputs would also follow the paths between them: a skip
    connection's input reaches the sum through the other branch too)."""

    outs: list[Vector]
    ins: list[list[Vector]]
    is_sum: bool = False


@dataclass
class _DenseTerm:
    """A Dense layer: its NTK term ``(W_std²⟨x_i, x_j⟩ + b_std²)·⟨dh_i, dh_j⟩``; ``xs`` is
    ``None`` for a layer that reads the inputs (its output's covariance is the factor)."""

    index: int
    xs: list[Vector] | None
    hs: list[Vector]
    w2: float
    b2: float


class _Writer:
    """What every compiler of a network keeps: the Dense layers seen so far and the
    names in use. A layer validates its flow and calls the writer's ``dense_layer``,
    ``vectorwise`` or ``fan_in_sum``."""

    def __init__(self) -> None:
        self.dense = 0
        self.bases: set[str] = set()

    def fresh(self, base: str) -> str:
        """``base``, or ``base`` with a letter appended if it is taken."""
        name, k = base, 0
        while name in self.bases:
            name = f"{base}{chr(ord('a') + k % 26)}{k // 26 or ''}"
            k += 1
        self.bases.add(name)
        return name


class _Builder(_Writer):
    """State of one kernel program being written: the program, the tape of the forward
    pass and the Dense layers (NTK terms)."""

    def __init__(self, X: np.ndarray, name: str) -> None:
        super().__init__()
        self.p = Program(name)
        self.X = X
        self.tape: list[_Tape] = []
        self.terms: list[_DenseTerm] = []
        #: ``dh`` (``√n ∂f/∂h``, None off the readout's paths) of every Dense layer's outputs
        self.adjoints: dict[int, list[Vector | None]] = {}
        #: The Dense layers reading the inputs: their output vectors (one per input),
        #: ``σ_w`` and ``σ_b`` (their covariance is ``σ_w² ξ_iᵀξ_j/d + σ_b²``)
        self.inputs: list[tuple[list[Vector], float, float]] = []

    def dense_layer(self, layer: Dense, flow: Any) -> _Vecs:
        """A Dense layer on ``flow`` (the inputs or one vector per input)."""
        b = self
        b.dense += 1
        ell = b.dense
        base = b.fresh(f"h{ell}")
        w2, b2 = layer.W_std**2, layer.b_std**2
        if flow is _DATA:
            _check_input_kernel(b.X, layer.W_std, layer.b_std, "kernel_fn")
            hs = b.p.vectors(base, cov=_input_kernel(b.X, w2, b2))
            b.inputs.append((hs, layer.W_std, layer.b_std))
            b.terms.append(_DenseTerm(ell, None, hs, w2, b2))
            return _Vecs(base, hs)
        W = b.p.matrix(f"W{ell}", var=1.0)
        bias = b.p.vector(f"b{ell}") if layer.b_std else None
        fn = _dense_fn(layer.W_std, layer.b_std if bias is not None else None)
        hs = []
        for i, x in enumerate(flow.vecs):
            Wx = W.matmul(x, name=f"W{ell}{flow.base}_{i}")
            hs.append(
                fn(Wx, bias, name=f"{base}_{i}") if bias is not None else fn(Wx, name=f"{base}_{i}")
            )
        b.tape.append(_Tape(hs, [[x] for x in flow.vecs]))
        b.terms.append(_DenseTerm(ell, flow.vecs, hs, w2, b2))
        return _Vecs(base, hs)

    def vectorwise(self, layer: _Vectorwise, flow: _Vecs) -> _Vecs:
        """A coordinatewise layer (nonlinearity, LayerNorm) on every input's vector."""
        base = self.fresh(layer._base(self.dense))
        outs = [layer._one(x, f"{base}_{i}") for i, x in enumerate(flow.vecs)]
        self.tape.append(_Tape(outs, [[x] for x in flow.vecs]))
        return _Vecs(base, outs)

    def fan_in_sum(self, flow: tuple[_Vecs, ...]) -> _Vecs:
        """The sum of the branches, per input."""
        base = self.fresh(f"s{self.dense}")
        outs, ins = [], []
        for i in range(len(flow[0].vecs)):
            xs = [f.vecs[i] for f in flow]
            outs.append(lincomb([(None, x) for x in xs], name=f"{base}_{i}"))
            ins.append(xs)  # a vector twice is counted twice (its cotangent too)
        self.tape.append(_Tape(outs, ins, is_sum=True))
        return _Vecs(base, outs)


# ---------------------------------------------------------------------------------------
# Layers


class Layer:
    """A layer or a network of layers: a description, without weights.

    Every combinator of this module returns a :class:`Layer`; a network whose last
    layer is a :func:`Dense` (the readout) has kernels (:meth:`kernel_fn`) and, with a
    hidden layer and no readout bias, a trainable :meth:`model`.
    """

    def _apply(self, b: Any, flow: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _flat(self) -> list[Layer]:
        return [self]

    # -- the network as a whole -----------------------------------------------------------

    def program(self, x1: Any, x2: Any = None) -> tuple[Program, np.ndarray, np.ndarray]:
        r"""The tensor program of the network's forward and backward pass.

        Parameters
        ----------
        x1 : array_like, shape (B1, d)
            Inputs (rows), finite.
        x2 : array_like, shape (B2, d), optional
            Second inputs: the program holds the ``B1 × B2`` cross-kernel entries.
            ``None``: the ``B1 × B1`` kernel of ``x1`` (entries ``i ≤ j``).

        Returns
        -------
        program : tensorprog.Program
        nngp, ntk : numpy.ndarray of Scalar handles, shape (B1, B2) or (B1, B1)
            ``nngp[i, j]`` has limit ``K(x1_i, x2_j)``, ``ntk[i, j]`` has limit
            ``Θ(x1_i, x2_j)``. Without ``x2`` the same handle sits at ``[i, j]`` and
            ``[j, i]``.

        Notes
        -----
        The forward pass runs on all ``B1 + B2`` inputs; the Moments (and kernel
        entries) are only those of the requested pairs. Their limits need the
        diagonal ``K(ξ, ξ)`` of every layer, which the Master Theorem's recursion
        computes by itself (variances of the ``Ẑ``), without Moments of their own.
        """
        X, B1, pairs = _validate_inputs(x1, x2, "kernel_fn", ("x1", "x2"))
        body, readout = _split_readout(self)
        dense = sum(isinstance(la, Dense) for la in _flat_all(self))
        _check_memory(len(pairs), dense, f"kernel_fn on {len(pairs):,} kernel entries", "x1")
        with paused_gc():  # see tensorprog.core._gc
            return _build(body, readout, X, B1, pairs, f"stax_{len(body) + 1}_layers")

    def kernel_fn(
        self,
        x1: Any,
        x2: Any = None,
        get: str | Sequence[str] | None = None,
        *,
        return_info: bool = False,
        batch_size: int | None = None,
        pairwise: bool = True,
        **limit_kw: Any,
    ) -> Any:
        r"""The NNGP and NTK of the network on ``x1`` (and ``x2``), as neural-tangents'
        ``kernel_fn(x1, x2, get)``.

        Parameters
        ----------
        x1 : array_like, shape (B1, d)
        x2 : array_like, shape (B2, d), optional
            ``None``: the kernel of ``x1`` with itself.
        get : {"nngp", "ntk"} or a tuple of them, optional
            A str returns that kernel (an array); a tuple returns a namedtuple with
            those fields in that order; ``None`` returns both (``.nngp``, ``.ntk``).
        return_info : bool, default False
            Return a :class:`tensorprog.nn.KernelResult` (both kernels with every
            entry's method and error) instead.
        batch_size : int, optional
            Kernel entries evaluated together (neural-tangents' ``nt.batch``); default
            8192. Memory grows linearly with it; the time per entry barely changes
            above a few thousand.
        pairwise : bool, default True
            Entry by entry (see Notes); ``False``: one program holding every entry,
            whose limit is taken at once (:meth:`program`).
        **limit_kw
            Passed to :meth:`tensorprog.Program.limit` (``method``, ``degree``, and
            the Monte Carlo options, used by entries that need it); ``progress=True``
            also shows a progress bar over the kernel entries.

        Returns
        -------
        numpy.ndarray, namedtuple or KernelResult
            Shape ``(B1, B2)`` (``(B1, B1)`` without ``x2``).

        Notes
        -----
        Entry ``(i, j)`` of every layer depends only on the inputs ``ξ_i, ξ_j``: the
        program of :meth:`program` on two inputs holds that entry and the diagonal
        entries of the two inputs, and its limit is a function of the inputs' covariance
        ``σ_w² ξ_iᵀξ_j/d + σ_b²`` only. That program is derived and planned once per
        network and method (:func:`tensorprog.compile_limit`; the last 16 are kept)
        and evaluated for all entries, ``batch_size`` at a time, with numpy: a
        repeated call on new inputs costs numpy evaluation only. An entry whose
        expectations the compiled methods (exact forms, quadrature) do not certify
        gets the whole-program limit of its two inputs, which may use Monte Carlo
        (never silently). The memory needed — the kernels, and one block of entries —
        is estimated before anything is allocated.

        Warns
        -----
        tensorprog.MonteCarloWarning
            If some entry had to be estimated by Monte Carlo (``method="auto"``).

        Raises
        ------
        tensorprog.ProgramTypeError, tensorprog.ProgramValueError
            Bad inputs or ``get`` (the message names the argument), or a network that
            does not end in a Dense readout or feeds raw inputs to a non-Dense layer.
        tensorprog.ResourceError
            When the kernels and a block of entries do not fit in the memory this
            process may use: the error's ``knob`` is ``"x1"`` (fewer inputs) or
            ``"batch_size"``.

        Examples
        --------
        >>> import numpy as np
        >>> from tensorprog.nn import stax
        >>> net = stax.serial(stax.Dense(1.5, 0.1), stax.Relu(), stax.Dense(1.5, 0.1),
        ...                   stax.Relu(), stax.Dense(1.5, 0.1))
        >>> X = np.array([[1.0, 0.0], [0.6, 0.8], [-1.0, 1.0]])
        >>> np.round(net.kernel_fn(X, get="ntk")[0], 8)
        array([4.34195312, 2.25999961, 0.59056138])
        >>> k = net.kernel_fn(X[:1], X[1:], get=("nngp", "ntk"))
        >>> np.round(k.nngp, 8), k.ntk.shape
        (array([[1.07713069, 0.71741663]]), (1, 2))
        """
        kinds = _parse_get(get)
        X, B1 = _stack_inputs(x1, x2, "kernel_fn", ("x1", "x2"))
        body, readout = _split_readout(self)
        name = f"stax_{len(body) + 1}_layers"
        res = _kernels(
            self,
            body,
            readout,
            X,
            B1,
            name,
            "kernel_fn",
            "x1",
            return_info,
            batch_size,
            pairwise,
            limit_kw,
        )
        if return_info:
            return res
        if isinstance(kinds, str):
            return getattr(res, kinds)
        return _namedtuple(kinds)(*(getattr(res, k) for k in kinds))

    def model(self, d_in: int, d_out: int = 1, name: str = "stax") -> Model:
        r"""The network as an :class:`~tensorprog.nn.Model`, for :func:`tensorprog.nn.train`.

        Dense layer ``l`` (counted from 1 in the order the network is written, branches
        included) declares a weight ``W{l}`` and, if ``b_std > 0``, a bias ``b{l}``
        (shape ``("n",)``): ``("n", d_in)`` (an input weight) when it reads the inputs,
        ``("n", "n")`` (a hidden weight) otherwise, and ``(d_out, "n")`` (the output
        weight) for the readout. Its forward is the network's: ``P x (+ b)`` per Dense
        layer, the nonlinearities and :func:`tensorprog.nn.layernorm` coordinatewise,
        :func:`FanInSum` the sum of the branches.

        The scales become initialisations: ``W_std`` is the weights' ``init_std``,
        ``b_std`` the biases', multiplying the variance ``v`` of the parametrization
        ``nn.train`` is given, so entries are ``N(0, W_std² v)``. Under ``nn.muP()``
        [TP5 Table 3] that is ``N(0, W_std²/d_in)`` for an input weight,
        ``N(0, W_std²/n)`` for a hidden weight, ``N(0, W_std²/n²)`` for the readout and
        ``N(0, b_std²)`` for a bias. The hidden layers are those of the network of
        :meth:`kernel_fn` (neural-tangents' ``W_std/√fan_in · W x + b_std · b``, the same
        distribution); the readout is μP's, smaller by ``√n``: the output starts at 0 in
        the limit and its features move (feature learning, [TP4 §3]) — the kernel regime
        of :meth:`kernel_fn` is not a limit of ``nn.train`` (it refuses it).

        Parameters
        ----------
        d_in : int
            Input dimension ``d``: rows of ``X`` have ``d`` features.
        d_out : int, default 1
            Outputs ``k`` of the readout (neural-tangents' ``Dense(out_dim, …)`` last).
        name : str, default "stax"
            The model's name.

        Returns
        -------
        tensorprog.nn.Model

        Raises
        ------
        tensorprog.ProgramValueError
            Naming the layer: a network that does not end with a Dense readout, a
            readout with ``b_std > 0`` (an output bias would be a random draw of
            ``d_out`` numbers, which has no deterministic limit; ``nn.Model`` allows
            scalar-like parameters only with ``init_std=0``), a readout reading the inputs
            (no hidden layer), a non-Dense layer or a sum reading the inputs, branches
            not combined by :func:`FanInSum`; bad ``d_in``, ``d_out``.

        Examples
        --------
        >>> import numpy as np
        >>> from tensorprog import nn
        >>> from tensorprog.nn import stax
        >>> net = stax.serial(stax.Dense(1.5, 0.1), stax.Relu(), stax.Dense(1.0))
        >>> m = net.model(2)
        >>> m
        <Model 'stax': W1 ('n', 2) input weights, b1 ('n',) vector-like, W2 (1, 'n') output weights>
        >>> X, Y = np.array([[1.0, 0.0], [0.6, 0.8]]), np.array([0.5, -0.5])
        >>> run = nn.train(m, X, Y, steps=2, optimizer=nn.SGD(0.5), param=nn.muP())
        >>> run.simulate(64, seed=0).outputs.shape
        (3, 2, 1)
        """
        d_in, d_out = _positive_int(d_in, "d_in"), _positive_int(d_out, "d_out")
        body, readout = _split_readout(self)
        w = _ModelWriter(Model(name), d_in)
        flow = _write_body(w, body, readout, "model: ")
        if flow is _DATA:
            raise ProgramValueError(
                f"model: the readout {readout!r} reads the inputs; a model needs a hidden "
                f"layer (e.g. serial(Dense(…), Relu(), {readout!r})): an output weight "
                f'(d_out, "n") reads width-n vectors'
            )
        if readout.b_std:
            raise ProgramValueError(
                f"model: the readout {readout!r} has b_std={readout.b_std:g} > 0; an output "
                f"bias drawn at random (d_out numbers) has no deterministic limit "
                f"(nn.Model's scalar-like parameters need init_std=0); use "
                f"Dense({readout.W_std:g}, 0.0) last"
            )
        w.dense += 1
        out = f"W{w.dense}"
        w.model.param(out, (d_out, "n"), init_std=readout.W_std)
        w.model.forward(w.forward(out))
        return w.model

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _warn_montecarlo(
    count: int, entries: int, worst: float, limit_kw: dict[str, Any], where: str
) -> None:
    """Say so when ``count`` of the ``2·entries`` distinct kernel entries were estimated
    by Monte Carlo (never silently); ``worst``: their largest standard error."""
    if limit_kw.get("method", "auto") != "auto" or not count:
        return
    warnings.warn(
        f"{where}: {count} of {2 * entries} kernel entries were estimated by "
        f"Monte Carlo (largest standard error {worst:.3g}): some expectation has no "
        f"exact form and quadrature did not reach its tolerance; use "
        f"return_info=True for every entry's method and error",
        MonteCarloWarning,
        stacklevel=4,
    )


_GET = ("nngp", "ntk")


def _parse_get(get: Any) -> str | tuple[str, ...]:
    if get is None:
        return _GET
    if isinstance(get, str):
        if get not in _GET:
            raise ProgramValueError(
                f"kernel_fn: get must be 'nngp', 'ntk' or a tuple of them, got {get!r}"
            )
        return get
    if isinstance(get, (tuple, list)) and get and all(isinstance(g, str) for g in get):
        bad = [g for g in get if g not in _GET]
        if bad or len(set(get)) != len(get):
            raise ProgramValueError(
                f"kernel_fn: get must name 'nngp' and/or 'ntk', each once, got {tuple(get)!r}"
            )
        return tuple(get)
    raise ProgramTypeError(f"kernel_fn: get must be a str, a tuple of str or None, got {get!r}")


_NAMEDTUPLES: dict[tuple[str, ...], type] = {}


def _namedtuple(kinds: tuple[str, ...]) -> type:
    """``Kernel(nngp, ntk)`` (fields in the order asked for), one class per order."""
    if kinds not in _NAMEDTUPLES:
        _NAMEDTUPLES[kinds] = namedtuple("Kernel", kinds)  # type: ignore[misc]
    return _NAMEDTUPLES[kinds]


class _Serial(Layer):
    def __init__(self, layers: tuple[Layer, ...]) -> None:
        self.layers = layers

    def _apply(self, b: Any, flow: Any) -> Any:
        for layer in self.layers:
            flow = layer._apply(b, flow)
        return flow

    def _flat(self) -> list[Layer]:
        return [x for layer in self.layers for x in layer._flat()]

    def __repr__(self) -> str:
        return f"serial({', '.join(map(repr, self.layers))})"


class _Parallel(Layer):
    def __init__(self, layers: tuple[Layer, ...]) -> None:
        self.layers = layers

    def _apply(self, b: Any, flow: Any) -> Any:
        if not isinstance(flow, tuple) or len(flow) != len(self.layers):
            got = f"{len(flow)} branches" if isinstance(flow, tuple) else "one input"
            raise ProgramValueError(
                f"{self!r}: needs {len(self.layers)} branches (from FanOut({len(self.layers)})), "
                f"got {got}"
            )
        return tuple(layer._apply(b, f) for layer, f in zip(self.layers, flow))

    def __repr__(self) -> str:
        return f"parallel({', '.join(map(repr, self.layers))})"


def _layers(layers: tuple[Any, ...], where: str) -> tuple[Layer, ...]:
    if not layers:
        raise ProgramValueError(f"{where}: needs at least one layer")
    for k, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise ProgramTypeError(
                f"{where}: layer {k} must be a tensorprog.nn.stax layer (Dense(…), Relu(), …), "
                f"got {type(layer).__name__}"
            )
    return layers


def serial(*layers: Layer) -> Layer:
    """The layers one after the other (neural-tangents' ``stax.serial``).

    Returns a :class:`Layer`; with a :func:`Dense` readout last it has
    :meth:`Layer.kernel_fn` (there is no ``init_fn``/``apply_fn``: a finite network of
    the same program is :meth:`tensorprog.Program.simulate` of :meth:`Layer.program`,
    and :meth:`Layer.model` is the network to train with :func:`tensorprog.nn.train`).
    """
    return _Serial(_layers(layers, "serial"))


def parallel(*layers: Layer) -> Layer:
    """One layer per branch of a :func:`FanOut` (neural-tangents' ``stax.parallel``)."""
    return _Parallel(_layers(layers, "parallel"))


class Dense(Layer):
    r"""A fully connected layer, neural-tangents' ``Dense(·, W_std, b_std,
    parameterization="ntk")``: ``W_std/√fan_in · W x + b_std · b`` with ``W, b`` iid
    ``N(0, 1)``.

    Parameters
    ----------
    W_std : float, default 1.0
        ``σ_w > 0``. ``fan_in`` is the width ``n → ∞`` after the first layer and the
        input dimension ``d`` for a layer that reads the inputs.
    b_std : float, default 0.0
        ``σ_b ≥ 0`` (0: no bias).
    parameterization : {"ntk"}
        Only NT's ``"ntk"`` parameterization (the one whose NTK has a limit without
        rescaling the learning rate) is written.

    Notes
    -----
    There is no width argument: hidden layers are infinitely wide, and the output
    dimension of the readout does not change the kernels (they are per output
    coordinate).
    """

    def __init__(
        self, W_std: float = 1.0, b_std: float = 0.0, parameterization: str = "ntk"
    ) -> None:
        W_std = _real(W_std, "W_std", "Dense")
        if not W_std > 0:
            raise ProgramValueError(f"Dense: W_std must be > 0, got {W_std}")
        b_std = _real(b_std, "b_std", "Dense")
        if b_std < 0:
            raise ProgramValueError(f"Dense: b_std must be ≥ 0, got {b_std}")
        if parameterization != "ntk":
            raise ProgramValueError(
                f"Dense: parameterization must be 'ntk' (neural-tangents' NTK "
                f"parameterization: weights N(0, 1), scales W_std/√fan_in in the forward "
                f"pass), got {parameterization!r}"
            )
        self.W_std, self.b_std = W_std, b_std

    def _apply(self, b: Any, flow: Any) -> Any:
        if isinstance(flow, tuple):
            raise ProgramValueError(
                f"{self!r}: got {len(flow)} branches; combine them with FanInSum() first"
            )
        return b.dense_layer(self, flow)

    def __repr__(self) -> str:
        return f"Dense({self.W_std:g}, {self.b_std:g})"


def _input_kernel(X: np.ndarray, w2: float, b2: float) -> np.ndarray:
    """``σ_w² XXᵀ/d + σ_b²``, symmetrised."""
    K = w2 * (X @ X.T) / X.shape[1] + b2
    return (K + K.T) / 2


def _dense_fn(W_std: float, b_std: float | None) -> Nonlinearity:
    """``h = σ_w·(Wx) + σ_b·b`` as one transparent (linear) Nonlin."""
    a, c = sympy.symbols("a c", real=True)
    if b_std is None:
        return Nonlinearity("dense", W_std * a, [a], opaque=False)
    return Nonlinearity("dense", W_std * a + b_std * c, [a, c], opaque=False)


class _Vectorwise(Layer):
    """A layer that maps each input's vector to one vector (needs a vector flow)."""

    def _apply(self, b: Any, flow: Any) -> Any:
        if flow is _DATA:
            raise ProgramValueError(
                f"{self!r}: reads the raw inputs; every path from the inputs must start "
                f"with Dense(…) (data enters a tensor program through its first layer's "
                f"Gaussian preactivations)"
            )
        if isinstance(flow, tuple):
            raise ProgramValueError(
                f"{self!r}: got {len(flow)} branches; combine them with FanInSum() first"
            )
        return b.vectorwise(self, flow)

    def _base(self, dense: int) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _one(self, x: Vector, name: str) -> Vector:  # pragma: no cover - abstract
        raise NotImplementedError


class Elementwise(_Vectorwise):
    """A coordinatewise nonlinearity ``x ↦ φ(x)``: any one-argument
    :class:`tensorprog.Nonlinearity` or builtin name (neural-tangents'
    ``stax.Elementwise``; its backward pass uses ``φ'`` as backprop does).

    Parameters
    ----------
    fn : str or tensorprog.Nonlinearity
        ``φ``, real and finite on the whole real line.
    """

    def __init__(self, fn: str | Nonlinearity) -> None:
        self.phi = _check_nonlin(fn, "Elementwise")

    def _base(self, dense: int) -> str:
        return f"x{dense}"

    def _one(self, x: Vector, name: str) -> Vector:
        return self.phi(x, name=name)

    def __repr__(self) -> str:
        return f"Elementwise({self.phi.name})"


class _LayerNorm(_Vectorwise):
    def __init__(self, eps: float) -> None:
        eps = _real(eps, "eps", "LayerNorm")
        if eps < 0:
            raise ProgramValueError(f"LayerNorm: eps must be ≥ 0, got {eps}")
        self.eps = eps

    def _base(self, dense: int) -> str:
        return f"ln{dense}"

    def _one(self, x: Vector, name: str) -> Vector:
        return layernorm(x, eps=self.eps, name=name)

    def __repr__(self) -> str:
        return f"LayerNorm(eps={self.eps:g})"


def LayerNorm(eps: float = 1e-12) -> Layer:  # noqa: N802 - NT's name
    r"""Layer normalisation over the width: ``(h − mean h)/√(var h + ε)``
    (:func:`tensorprog.nn.layernorm`; neural-tangents' ``stax.LayerNorm(axis=-1)``).

    Parameters
    ----------
    eps : float, default 1e-12
        ``ε ≥ 0`` (neural-tangents' default).

    Notes
    -----
    The mean and variance are Moments of the program; in the limit they converge to
    ``𝔼Z`` and ``Var Z`` [TP2 §3]. The backward pass treats them as constants (TP4's
    frozen Nonlin+ parameters): their gradient terms vanish as ``n → ∞``, because the
    backward vectors are centred and independent of the forward ones. For a centred
    input (e.g. after a Dense layer) this is neural-tangents' kernel
    ``K_ij/√((K_ii + ε)(K_jj + ε))``; neural-tangents refuses non-Gaussian inputs
    (e.g. after a Relu), which the program handles (the mean is subtracted).
    """
    return _LayerNorm(eps)


class _Identity(Layer):
    def _apply(self, b: Any, flow: Any) -> Any:
        return flow


def Identity() -> Layer:  # noqa: N802 - NT's name
    """The identity layer (neural-tangents' ``stax.Identity``), e.g. the skip branch of
    a residual block."""
    return _Identity()


class _FanOut(Layer):
    def __init__(self, num: int) -> None:
        if isinstance(num, bool) or not isinstance(num, numbers.Integral) or num < 1:
            raise ProgramValueError(f"FanOut: num must be an int ≥ 1, got {num!r}")
        self.num = int(num)

    def _apply(self, b: Any, flow: Any) -> Any:
        if isinstance(flow, tuple):
            raise ProgramValueError(f"{self!r}: got {len(flow)} branches; combine them first")
        return (flow,) * self.num

    def __repr__(self) -> str:
        return f"FanOut({self.num})"


def FanOut(num: int) -> Layer:  # noqa: N802 - NT's name
    """``num`` copies of the input, one per branch of the following :func:`parallel`
    (neural-tangents' ``stax.FanOut``)."""
    return _FanOut(num)


class _FanInSum(Layer):
    def _apply(self, b: Any, flow: Any) -> Any:
        if not isinstance(flow, tuple):
            raise ProgramValueError("FanInSum(): needs branches (FanOut, parallel), got one input")
        if any(f is _DATA for f in flow):
            raise ProgramValueError(
                "FanInSum(): a branch carries the raw inputs; start every branch that reads "
                "the inputs with Dense(…)"
            )
        if any(isinstance(f, tuple) for f in flow):
            raise ProgramValueError("FanInSum(): nested branches; combine the inner ones first")
        return b.fan_in_sum(flow)


def FanInSum() -> Layer:  # noqa: N802 - NT's name
    r"""The sum of the branches (neural-tangents' ``stax.FanInSum``).

    The program computes the kernel of the sum itself, cross-covariances of the
    branches included; neural-tangents adds the branches' kernels, which is the same
    when the branches are uncorrelated (e.g. a skip ``Identity()`` beside a branch that
    ends in a Dense layer).
    """
    return _FanInSum()


# -- nonlinearities (neural-tangents' definitions) ----------------------------------------

_X = sympy.Symbol("x", real=True)


def _custom(name: str, body: Any) -> Layer:
    return Elementwise(Nonlinearity(name, body, [_X]))


class _Scaled(_Vectorwise):
    """``x ↦ Σ_k c_k φ_k(b·x)`` for builtin ``φ_k`` (neural-tangents' ``Exp(a, b)``,
    ``Sin(a, b, c)``, ``Cos(a, b, c)``, ``Erf(a, b)``): written with the builtins, whose
    closed forms then apply to the Gaussian ``b·x``."""

    def __init__(self, label: str, b: float, terms: tuple[tuple[float, Nonlinearity], ...]):
        self.label, self.b = label, b
        self.terms = tuple((c, phi) for c, phi in terms if c != 0.0)

    def _base(self, dense: int) -> str:
        return f"x{dense}"

    def _one(self, x: Vector, name: str) -> Vector:
        y = x if self.b == 1.0 else lincomb([(self.b, x)])
        if len(self.terms) == 1 and self.terms[0][0] == 1.0:
            return self.terms[0][1](y, name=name)
        return lincomb([(c, phi(y)) for c, phi in self.terms], name=name)

    def __repr__(self) -> str:
        return self.label


def _abc(where: str, **values: float) -> list[float]:
    return [_real(v, k, where) for k, v in values.items()]


def Relu() -> Layer:  # noqa: N802
    """``max(x, 0)`` (builtin ``relu``; arc-cosine closed form)."""
    return Elementwise("relu")


def ABRelu(a: float, b: float) -> Layer:  # noqa: N802
    """``a·min(x, 0) + b·max(x, 0)`` (neural-tangents' ``stax.ABRelu``; the member
    :func:`tensorprog.ab_relu` ``(a, b)``, closed forms)."""
    a, b = _abc("ABRelu", a=a, b=b)
    return Elementwise(ab_relu(a, b))


def LeakyRelu(alpha: float) -> Layer:  # noqa: N802
    """``α·min(x, 0) + max(x, 0)`` (neural-tangents' ``stax.LeakyRelu``;
    :func:`tensorprog.leaky_relu`, closed forms)."""
    (alpha,) = _abc("LeakyRelu", alpha=alpha)
    return Elementwise(leaky_relu(alpha))


def Abs() -> Layer:  # noqa: N802
    """``|x|`` (builtin ``abs``)."""
    return Elementwise("abs")


def Sign() -> Layer:  # noqa: N802
    """``sign(x)`` (builtin ``sign``; its backprop derivative is 0)."""
    return Elementwise("sign")


def Erf(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:  # noqa: N802
    """``a·erf(b·x) + c`` (neural-tangents' ``stax.Erf``): the builtin ``erf`` of
    ``b·x`` when ``c = 0``; otherwise one sympy function (quadrature)."""
    a, b, c = _abc("Erf", a=a, b=b, c=c)
    if c == 0.0:
        return _Scaled(f"Erf({a:g}, {b:g})", b, ((a, BUILTINS["erf"]),))
    return _custom(f"erf_{a:g}_{b:g}_{c:g}", a * sympy.erf(b * _X) + c)


def Sigmoid_like() -> Layer:  # noqa: N802
    """``erf(x/2.4020563531719796)/2 + 1/2``, neural-tangents' erf stand-in for the
    logistic sigmoid."""
    return _custom(
        "sigmoid_like", sympy.erf(_X / sympy.Float("2.4020563531719796")) / 2 + sympy.Rational(1, 2)
    )


def Sigmoid() -> Layer:  # noqa: N802
    """The logistic sigmoid ``1/(1 + e^{-x})`` (builtin ``sigmoid``; not in
    neural-tangents, whose ``Sigmoid_like`` is an erf)."""
    return Elementwise("sigmoid")


def Tanh() -> Layer:  # noqa: N802
    """``tanh`` (builtin; neural-tangents has it only as ``ElementwiseNumerical``)."""
    return Elementwise("tanh")


def Gelu(approximate: bool = False) -> Layer:  # noqa: N802
    """The exact GELU ``x Φ(x)`` (builtin ``gelu``; neural-tangents' ``stax.Gelu``)."""
    if approximate is not False:
        raise ProgramValueError(
            f"Gelu: approximate must be False (the builtin gelu is the exact x·Φ(x); the "
            f"tanh approximation is a different function — pass it to Elementwise), got "
            f"{approximate!r}"
        )
    return Elementwise("gelu")


def Sin(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:  # noqa: N802
    """``a·sin(b·x + c) = a cos c · sin(b·x) + a sin c · cos(b·x)`` (neural-tangents'
    ``stax.Sin``), written with the builtins ``sin``, ``cos`` (closed forms)."""
    a, b, c = _abc("Sin", a=a, b=b, c=c)
    terms = ((a * math.cos(c), BUILTINS["sin"]), (a * math.sin(c), BUILTINS["cos"]))
    return _Scaled(f"Sin({a:g}, {b:g}, {c:g})", b, terms)


def Cos(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:  # noqa: N802
    """``a·cos(b·x + c) = a cos c · cos(b·x) − a sin c · sin(b·x)`` (neural-tangents'
    ``stax.Cos``), written with the builtins ``cos``, ``sin`` (closed forms)."""
    a, b, c = _abc("Cos", a=a, b=b, c=c)
    terms = ((a * math.cos(c), BUILTINS["cos"]), (-a * math.sin(c), BUILTINS["sin"]))
    return _Scaled(f"Cos({a:g}, {b:g}, {c:g})", b, terms)


def Exp(a: float = 1.0, b: float = 1.0) -> Layer:  # noqa: N802
    """``a·exp(b·x)`` (neural-tangents' ``stax.Exp``): the builtin ``exp`` of ``b·x``
    (closed forms)."""
    a, b = _abc("Exp", a=a, b=b)
    return _Scaled(f"Exp({a:g}, {b:g})", b, ((a, BUILTINS["exp"]),))


def Rbf(gamma: float = 1.0) -> Layer:  # noqa: N802
    """``√2·sin(√(2γ)·x + π/4)``, neural-tangents' ``stax.Rbf`` (its NNGP is the RBF
    kernel of the layer's input; :func:`tensorprog.rbf`, closed forms)."""
    (gamma,) = _abc("Rbf", gamma=gamma)
    if not gamma > 0:
        raise ProgramValueError(f"Rbf: gamma must be > 0, got {gamma}")
    return Elementwise(rbf(gamma))


def _degree(degree: Any, where: str) -> int:
    if isinstance(degree, bool) or not isinstance(degree, numbers.Integral) or degree < 0:
        raise ProgramValueError(f"{where}: degree must be an int ≥ 0, got {degree!r}")
    return int(degree)


def Monomial(degree: int) -> Layer:  # noqa: N802
    """``x^degree`` (neural-tangents' ``stax.Monomial``; :func:`tensorprog.monomial`)."""
    return Elementwise(monomial(_degree(degree, "Monomial")))


def RectifiedMonomial(degree: int) -> Layer:  # noqa: N802
    """``1[x ≥ 0]·x^degree`` (neural-tangents' ``stax.RectifiedMonomial``;
    :func:`tensorprog.rectified_monomial`)."""
    return Elementwise(rectified_monomial(_degree(degree, "RectifiedMonomial")))


def Polynomial(coef: Sequence[float]) -> Layer:  # noqa: N802
    """``coef[0] + coef[1]·x + … + coef[k]·x^k`` (neural-tangents' ``stax.Polynomial``;
    :func:`tensorprog.polynomial`)."""
    if isinstance(coef, (str, bytes)) or not isinstance(coef, Sequence) or not coef:
        raise ProgramTypeError(
            f"Polynomial: coef must be a non-empty sequence of numbers, got {coef!r}"
        )
    cs = [_real(c, f"coef[{k}]", "Polynomial") for k, c in enumerate(coef)]
    return Elementwise(polynomial(cs))


# ---------------------------------------------------------------------------------------
# The program


def _flat_all(layer: Layer) -> list[Layer]:
    """Every layer of the network, branches included."""
    out: list[Layer] = []
    for la in layer._flat():
        if isinstance(la, _Parallel):
            for sub in la.layers:
                out += _flat_all(sub)
        else:
            out.append(la)
    return out


def _split_readout(network: Any) -> tuple[list[Layer], Dense]:
    if not isinstance(network, Layer):
        raise ProgramTypeError(f"expected a tensorprog.nn.stax layer, got {type(network).__name__}")
    flat = network._flat()
    if not isinstance(flat[-1], Dense):
        raise ProgramValueError(
            f"{network!r}: the network must end with a Dense layer, its readout (the "
            f"kernels are those of the readout's output; neural-tangents' "
            f"Dense(out_dim, …) last), got {flat[-1]!r} last"
        )
    return flat[:-1], flat[-1]


def _write_body(w: _Writer, body: list[Layer], readout: Dense, where: str) -> Any:
    """The layers before the readout, written by ``w``: what flows into the readout (the
    inputs or one vector per input; branches are refused)."""
    flow: Any = _DATA
    for layer in body:
        flow = layer._apply(w, flow)
    if isinstance(flow, tuple):
        raise ProgramValueError(
            f"{where}the readout {readout!r} gets {len(flow)} branches; combine them with "
            f"FanInSum() first"
        )
    return flow


def _build(*args: Any) -> tuple[Program, np.ndarray, np.ndarray]:
    """:func:`_write`'s program and kernel entries."""
    b, nngp, ntk = _write(*args)
    return b.p, nngp, ntk


def _write(
    body: list[Layer],
    readout: Dense,
    X: np.ndarray,
    B1: int,
    pairs: list[tuple[int, int]],
    name: str,
) -> tuple[_Builder, np.ndarray, np.ndarray]:
    """Write the program: forward on every row of ``X`` (stacked ``x1``, ``x2``), the
    backward pass from the readout, and the kernel entries of ``pairs`` (stacked row
    indices ``(i, j)``; entry ``[i, j - B1]`` of a cross-kernel, ``[i, j]`` and ``[j, i]``
    of a symmetric one). Returns the builder (its program and input layers)."""
    b = _Builder(X, name)
    flow = _write_body(b, body, readout, "")
    b.dense += 1
    w2, b2 = readout.W_std**2, readout.b_std**2
    if flow is _DATA:  # a single Dense layer: its output's covariance is the kernel
        hs = b.p.vectors(b.fresh(f"h{b.dense}"), cov=_input_kernel(X, w2, b2))
        b.inputs.append((hs, readout.W_std, readout.b_std))
        flow, w2, b2 = _Vecs(f"h{b.dense}", hs), 1.0, 0.0
    else:
        _backward(b, flow, readout.W_std)
    xs = flow.vecs
    # Kernel entries: one Moment per (pair, factor), one ScalarFn per kernel entry.
    nngp_fn, ntk_fn, terms = _readout_sums(b, w2, b2)
    moments: dict[tuple[str, str], Any] = {}

    def moment(u: Vector, v: Vector, label: str) -> Any:
        key = (u.name, v.name)
        if key not in moments:
            moments[key] = inner(u, v, name=label)
        return moments[key]

    B = X.shape[0]
    shape = (B1, B1) if B == B1 else (B1, B - B1)
    nngp = np.empty(shape, dtype=object)
    ntk = np.empty(shape, dtype=object)
    for i, j in pairs:
        args = []
        for t, dhs in terms:
            lab = f"{i}_{j}"
            if t.xs is None:
                args.append(moment(t.hs[i], t.hs[j], f"K{t.index}_{lab}"))
            args.append(moment(dhs[i], dhs[j], f"D{t.index}_{lab}"))
            if t.xs is not None:
                args.append(moment(t.xs[i], t.xs[j], f"F{t.index - 1}_{lab}"))
        f = moment(xs[i], xs[j], f"F{b.dense - 1}_{i}_{j}")
        n_ij = nngp_fn(f, name=f"nngp_{i}_{j}")
        t_ij = ntk_fn(*args, f, name=f"ntk_{i}_{j}")
        if B == B1:
            nngp[i, j] = nngp[j, i] = n_ij
            ntk[i, j] = ntk[j, i] = t_ij
        else:
            nngp[i, j - B1] = n_ij
            ntk[i, j - B1] = t_ij
    return b, nngp, ntk


def _backward(b: _Builder, flow: _Vecs, W_std: float) -> None:
    """The backward pass by :func:`tensorprog.grad`: from the readout's cotangent
    ``W_std·v`` of its input, one vector–Jacobian product per layer and input in
    reverse order of the tape; cotangents of a vector used twice (FanOut) are summed.
    Stores ``dh`` (``√n ∂f/∂h``) of every Dense output on its term."""
    users: dict[str, int] = {}
    for entry in b.tape:
        for ins in entry.ins:
            for x in ins:
                users[x.name] = users.get(x.name, 0) + 1
    for x in flow.vecs:
        users[x.name] = users.get(x.name, 0) + 1
    parts: dict[str, list[Vector]] = {}
    total: dict[str, Vector] = {}
    v = b.p.vector("v")
    dx = lincomb([(W_std, v)], name=f"d{flow.base}")  # √n ∂f/∂x of every input
    for x in flow.vecs:
        parts.setdefault(x.name, []).append(dx)

    def adjoint(y: Vector) -> Vector | None:
        if y.name not in total and y.name in parts:
            ps = parts.pop(y.name)
            total[y.name] = (
                ps[0] if len(ps) == 1 else lincomb([(None, q) for q in ps], name=f"d{y.name}")
            )
        return total.get(y.name)

    for entry in reversed(b.tape):
        for out, ins in zip(entry.outs, entry.ins):
            c = adjoint(out)
            if c is None:  # not on a path to the readout
                continue
            if entry.is_sum:
                gs = [c] * len(ins)
            else:
                (x,) = ins
                gs = [grad(out, x, cotangent=c, names=f"d{x.name}" if users[x.name] == 1 else None)]
            for x, g in zip(ins, gs):
                parts.setdefault(x.name, []).append(g)
    b.adjoints = {t.index: [adjoint(h) for h in t.hs] for t in b.terms}


def _readout_sums(b: _Builder, w2: float, b2: float) -> tuple[Nonlinearity, Nonlinearity, list]:
    r"""``nngp(F) = σ_w² F + σ_b²`` (the readout's input kernel ``F``) and
    ``ntk = Σ_l (σ_w² F_l + σ_b²) D_l + nngp`` over the Dense layers on a path to the
    readout (``K_l D_l`` for a layer reading the inputs, ``K_l`` its output covariance).

    Returns the two scalar functions and the terms ``(term, dh)`` whose Moments are
    their parameters, in order: per term ``[K_l,] D_l, [F_l]``, then the readout's ``F``.
    """
    adjoints = b.adjoints
    terms = [
        (t, adjoints[t.index]) for t in b.terms if adjoints.get(t.index, [None])[0] is not None
    ]
    F = sympy.Symbol("F", real=True)
    nngp = w2 * F + b2
    params: list[sympy.Symbol] = []
    body = nngp
    for k, (t, _) in enumerate(terms):
        D = sympy.Symbol(f"D{k}", real=True)
        if t.xs is None:
            K = sympy.Symbol(f"K{k}", real=True)
            params += [K, D]
            body += K * D
        else:
            Fk = sympy.Symbol(f"F{k}", real=True)
            params += [D, Fk]
            body += (t.w2 * Fk + t.b2) * D
    return (
        Nonlinearity("nngp", nngp, [], [F], opaque=False),
        Nonlinearity("ntk", body, [], params + [F], opaque=False),
        terms,
    )


# ---------------------------------------------------------------------------------------
# Kernels entry by entry, through compiled limits

#: The ``method`` values the pairwise path compiles (:func:`tensorprog.compile_limit`).
_PAIRWISE_METHODS = ("auto", "exact", "quadrature")
#: Kernel sets (entries) evaluated together by default (``batch_size``).
DEFAULT_BATCH_SIZE = 8192
#: Peak bytes per kernel entry and request of its compiled program while a block is
#: evaluated (values, errors, gathered laws, the evaluators' temporaries), measured with
#: tracemalloc at blocks of 256 and 2048 entries: 57 and 36 (relu, depth 10), 232 and 81
#: (erf, depth 3), 267 and 104 (gelu, depth 2); twice the largest. With fused groups
#: (:class:`tensorprog.engine.compiled.CompiledLimit`): 60 and 51, 94 and 68, 117 and 78.
_BYTES_PER_ENTRY_REQUEST = 512
#: Quadrature evaluates its points in chunks of at most 64 MiB (and as much for the
#: integrand's values): a fixed allowance when the entry program uses quadrature
#: (measured: 81 MiB peak for a tanh block of 256 entries, 97 MiB for 780).
_QUADRATURE_BYTES = 2 * 64 * 2**20
#: Compiled entry programs by architecture, most recently used last.
_COMPILED: OrderedDict[Any, _Pairwise | None] = OrderedDict()
_COMPILED_SIZE = 16


@dataclass(frozen=True, eq=False)
class _Pairwise:
    """The kernel program of one entry — the network's forward and backward pass on
    two inputs or one — compiled once per architecture.

    ``inputs``: per Dense layer reading the inputs, the indices of its vectors among
    the initial vectors, ``σ_w`` and ``σ_b``; ``nngp``, ``ntk``: the entry's scalars
    (``(0, 1)``, or ``(0, 0)`` on one input); ``diagonal``: the scalars ``(nngp, ntk)``
    of the entries ``(0, 0)`` and ``(1, 1)`` when the program on two inputs holds them
    too (kind ``"both"``: the laws of the entry ``(0, 1)`` already need every
    per-input Moment ⟨x_0, x_0⟩, ⟨x_1, x_1⟩ of the forward and backward pass but the
    last, so the diagonal costs the program its ScalarFns and the last backward
    Moments); ``cov``: the compiled program's initial covariance (the biases' and
    readout's variances stay, the inputs' blocks change per entry); ``per_input``: the
    requests (ids) that depend on the first input's vectors only, and on the second's
    (with the biases' and readout's): the same in every entry of that input, computed
    once per input (:func:`_pairwise_kernels`)."""

    compiled: Any
    inputs: tuple[tuple[np.ndarray, float, float], ...]
    nngp: Any
    ntk: Any
    diagonal: tuple[tuple[Any, Any], ...]
    cov: np.ndarray
    per_input: tuple[np.ndarray, ...]


#: The entries of the compiled entry programs, by kind: on one input (a diagonal entry),
#: on two (an entry of a cross-kernel), or on two with their diagonal entries too.
_ENTRY_PAIRS = {"one": [(0, 0)], "cross": [(0, 1)], "both": [(0, 1), (0, 0), (1, 1)]}


def _pairwise(key: Any, body: list[Layer], readout: Dense, kind: str, limit_kw: dict) -> Any:
    """The compiled entry program (kind of :data:`_ENTRY_PAIRS`) of an architecture
    (cached), or None when it has no compiled limit (an expectation needs Monte Carlo:
    the whole program's limit decides)."""
    method, degree = limit_kw.get("method", "auto"), limit_kw.get("degree")
    k = (key, kind, method, degree)
    if k in _COMPILED:
        _COMPILED.move_to_end(k)
        return _COMPILED[k]
    # any inputs with a correlation ≠ 0: the structure of correlated inputs is the general one
    X = np.array([[1.0]]) if kind == "one" else np.array([[1.0], [0.5]])
    with paused_gc():
        b, nngp, ntk = _write(body, readout, X, X.shape[0], _ENTRY_PAIRS[kind], "kernel_entry")
        try:
            c = compile_limit(b.p, method, degree=degree)
        except MethodUnavailableError:
            c = None
    out = None
    if c is not None:
        at = {name: i for i, name in enumerate(c.initial_vectors)}
        inputs = tuple(
            (np.array([at[h.name] for h in hs], dtype=np.intp), w2, b2) for hs, w2, b2 in b.inputs
        )
        i, j = _ENTRY_PAIRS[kind][0]
        diagonal = tuple((nngp[a, a], ntk[a, a]) for a in (0, 1)) if kind == "both" else ()
        copies = [[int(idx[a]) for idx, *_ in inputs if len(idx) == 2] for a in (0, 1)]
        per_input = tuple(c._within(v, copies[0] + copies[1]) for v in copies if v)
        out = _Pairwise(
            c, inputs, nngp[i, j], ntk[i, j], diagonal, b.p.initial_covariance, per_input
        )
    _COMPILED[k] = out
    while len(_COMPILED) > _COMPILED_SIZE:
        _COMPILED.popitem(last=False)
    return out


def _entry_blocks(
    B: int, B1: int, size: int, diagonal: bool
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stacked row indices ``(rows, cols)`` of the kernel entries, ``size`` at a time: the
    diagonal (``diagonal``), the entries ``i < j`` of a symmetric kernel, or all
    ``i < B1 ≤ j`` of a cross-kernel — unranked from linear positions, never all at once."""
    if diagonal:
        for t0 in range(0, B, size):
            idx = np.arange(t0, min(B, t0 + size))
            yield idx, idx
        return
    if B != B1:
        B2, total = B - B1, B1 * (B - B1)
        for t0 in range(0, total, size):
            t = np.arange(t0, min(total, t0 + size))
            yield t // B2, B1 + t % B2
        return
    before = np.arange(B) * (2 * B - np.arange(B) - 1) // 2  # entries i < j in rows < i
    total = B * (B - 1) // 2
    for t0 in range(0, total, size):
        t = np.arange(t0, min(total, t0 + size))
        i = np.searchsorted(before, t, side="right") - 1
        yield i, t - before[i] + i + 1


def _entry_laws(
    pw: _Pairwise,
    X: np.ndarray,
    sq: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Initial covariances ``(P, N, N)`` of the entry program for the entries ``(rows, cols)``:
    each input layer's block ``σ_w² ξᵀξ'/d + σ_b²`` (``sq``: every row's ``ξᵀξ``); a view
    of an ``(N, N, P)`` array, which the compiled limit reads without a copy — the first
    ``P`` columns of ``out`` when given, whose other cells (the biases' and readout's,
    the same in every entry) hold the program's covariance already."""
    d = X.shape[1]
    if out is None:
        out = np.empty((*pw.cov.shape, len(rows)))
        out[:] = pw.cov[:, :, None]
    C = out[:, :, : len(rows)]
    cross = None
    for idx, W_std, b_std in pw.inputs:
        w2, b2 = W_std**2, b_std**2
        a = idx[0]
        C[a, a] = w2 * sq[rows] / d + b2
        if len(idx) == 2:
            c = idx[1]
            if cross is None:
                cross = _dots(X, sq, rows, cols)
            C[c, c] = w2 * sq[cols] / d + b2
            C[a, c] = C[c, a] = w2 * cross / d + b2
    return C.transpose(2, 0, 1)


def _dots(X: np.ndarray, sq: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``ξ_iᵀξ_j`` for the entries ``(rows, cols)`` (``sq``: every ``ξ_iᵀξ_i``, the same
    sums): one product of the block's distinct rows with its distinct columns — a
    block of consecutive entries has few of one or the other — without gathering two
    rows per entry. Every ``ξ_iᵀξ_j`` is the same sum over coordinates (numpy's
    ``einsum``, not BLAS, whose blocking would make bits depend on the block)."""
    if rows is cols:
        return sq[rows]
    new = np.ones(len(rows), dtype=bool)
    np.not_equal(rows[1:], rows[:-1], out=new[1:])
    present = np.zeros(X.shape[0], dtype=bool)
    present[cols] = True
    ucols = np.flatnonzero(present)
    if int(new.sum()) * len(ucols) > 4 * len(rows) + X.shape[0]:  # no few of either
        return np.einsum("pk,pk->p", X[rows], X[cols])
    at = np.cumsum(present) - 1
    return np.einsum("ik,jk->ij", X[rows[new]], X[ucols])[np.cumsum(new) - 1, at[cols]]


def _pairwise_kernels(
    key: Any,
    body: list[Layer],
    readout: Dense,
    X: np.ndarray,
    B1: int,
    where: str,
    knob: str,
    return_info: bool,
    batch_size: int | None,
    limit_kw: dict[str, Any],
) -> tuple[KernelResult, int, float] | None:
    """The kernels entry by entry: entry ``(i, j)`` of every layer depends only on the
    inputs ``ξ_i, ξ_j`` (the forward and backward passes on them), so the entry program
    of two inputs is compiled once per architecture and evaluated for every entry,
    ``batch_size`` entries per vectorised call. For a symmetric kernel the program also
    holds the two inputs' diagonal entries (kind ``"both"``), so the diagonal costs no
    second program (one input: the program on one input). With several blocks, its
    per-input requests (the Moments ⟨x_i, x_i⟩, ⟨dh_i, dh_i⟩ of one input, which the
    laws of ``(i, j)`` need, and the diagonal entries) are evaluated first, once per
    input, on the sets ``(i, i)``, and given to every entry of that input (in one block,
    once per distinct input of the block: :func:`~tensorprog.engine.compiled._distinct`).
    The same bits either way. Entries whose expectations
    the compiled methods do not certify — or whose input's own requests are not
    certified — get the whole-program limit of their inputs (which may use Monte
    Carlo). Returns the kernels (without methods and errors unless ``return_info``),
    how many entries were sampled and their largest standard error; None when the
    entry program has no compiled limit."""
    B = X.shape[0]
    symmetric = B == B1
    # a symmetric kernel: its entries i < j through the program on two inputs that also
    # holds their diagonal entries (one input: the program on one input)
    kind = "cross" if not symmetric else "both" if B1 > 1 else "one"
    pw = _pairwise(key, body, readout, kind, limit_kw)
    if pw is None:
        return None
    for _, W_std, b_std in pw.inputs:
        _check_input_kernel(X, W_std, b_std, where)
    shape = (B1, B1) if symmetric else (B1, B - B1)
    entries = B1 * (B1 + 1) // 2 if symmetric else B1 * (B - B1)
    size = min(batch_size or DEFAULT_BATCH_SIZE, max(entries, 1))
    block = size * (_BYTES_PER_ENTRY_REQUEST * pw.compiled.requests + 8 * pw.cov.size)
    if "quadrature" in pw.compiled.methods.values():
        block += _QUADRATURE_BYTES
    result = 8 * shape[0] * shape[1] * (8 if return_info else 2)
    shown = f"B={B1}" if symmetric else f"B={B1}×{B - B1}"
    if batch_size is None or result > block:
        require_memory(
            f"{where} on {shown} inputs ({entries:,} kernel entries: the kernels, "
            f"{'their methods and errors, ' if return_info else ''}and blocks of {size:,} entries)",
            result + block,
            knob,
            "pass fewer inputs at a time (cross-kernels of blocks of them), or a smaller "
            "batch_size if the kernels alone fit",
        )
    else:
        require_memory(
            f"{where}: blocks of batch_size={size:,} kernel entries (and the {shown} kernels)",
            result + block,
            "batch_size",
            "choose a smaller batch_size",
        )
    out = {k: np.empty(shape) for k in ("nngp", "ntk")}
    err = {k: np.zeros(shape) for k in ("nngp", "ntk")} if return_info else None
    sq = np.einsum("ij,ij->i", X, X)
    redo: dict[tuple[int, int], None] = {}
    bar = None
    if limit_kw.get("progress", False):
        from tqdm.auto import tqdm

        bar = tqdm(total=entries, desc=f"{where}: kernel entries", leave=False)
    cpl = pw.compiled

    # the kernels' requests: the entry's, and the diagonal entries' (their columns in what
    # a block returns)
    kept = [cpl._rid(h) for hs in ((pw.nngp, pw.ntk), *pw.diagonal) for h in hs]
    column = {rid: q for q, rid in enumerate(kept)}

    def fill(V: np.ndarray, E: np.ndarray, r: np.ndarray, c: np.ndarray, hs: Any) -> None:
        """Values ``V`` and errors ``E`` ``(P, len(kept))`` of the scalars ``hs`` into the
        entries ``(r, c)`` (and their mirror images)."""
        flat = [r * shape[1] + c]
        if symmetric and r is not c:
            flat.append(c * shape[1] + r)
        for kernel, h in zip(("nngp", "ntk"), hs):
            q = column[cpl._rid(h)]
            for at in flat:
                out[kernel].ravel()[at] = V[:, q]
                if err is not None:
                    err[kernel].ravel()[at] = E[:, q]

    # 1. with several blocks, the per-input requests (the forward and backward Moments of
    # one input, and the diagonal entries) once per input, on the sets (i, i): every
    # entry (i, j) takes its inputs' values from there, the same numbers to the bit (in
    # one block, the block evaluates them once per distinct input, with its entries)
    bad_in = np.zeros(B, dtype=bool)
    split = bool(pw.per_input) and entries > size
    # per input: the requests, their values and errors (request-major, (·, B))
    per = [(rids, np.empty((len(rids), B)), np.empty((len(rids), B))) for rids in pw.per_input]
    if split:
        for idx, _ in _entry_blocks(B, B, size, True):
            # the entries' laws are built here from checked inputs: not validated again
            V, E, bad = cpl._run_built(_entry_laws(pw, X, sq, idx, idx))
            for rids, vals, errs in per:
                vals[:, idx], errs[:, idx] = V.T[rids], E.T[rids]
            bad_in[idx[np.array(list(bad), dtype=np.intp)]] = True
            if pw.diagonal:
                fill(V[:, kept], E[:, kept], idx, idx, pw.diagonal[0])
        if pw.diagonal:  # the diagonal entries of inputs whose own requests are not certified
            redo.update(dict.fromkeys((i, i) for i in np.flatnonzero(bad_in).tolist()))
        if bar is not None and pw.diagonal:
            bar.update(B1)
        per = [(rids, vals, errs if errs.any() else None) for rids, vals, errs in per]

    # 2. the entries, batch_size at a time (with their inputs' values given)
    def blocks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for rows, cols in _entry_blocks(B, B1, size, kind == "one"):
            if bad_in.any():  # an input whose own requests are not certified: its entries
                off = bad_in[rows] | bad_in[cols]
                redo.update(dict.fromkeys(zip(rows[off].tolist(), cols[off].tolist())))
                if bar is not None:
                    bar.update(int(off.sum()))
                rows, cols = rows[~off], cols[~off]
            if len(rows):
                yield rows, cols

    buffer = np.empty((*pw.cov.shape, size))  # the blocks' covariances
    buffer[:] = pw.cov[:, :, None]  # the biases' and readout's cells: the same in all

    for n_block, (rows, cols) in enumerate(blocks()):
        given = [(*p, at) for p, at in zip(per, (rows, cols))] if split else None
        C = _entry_laws(pw, X, sq, rows, cols, buffer)
        V, E, bad = cpl._run_built(C, given, share=not split)
        V, E = V[:, kept], E[:, kept]
        fill(V, E, rows, cols if symmetric else cols - B1, (pw.nngp, pw.ntk))
        if not split:  # the diagonal entries of the block's inputs
            for r, hs in zip((rows, cols), pw.diagonal):
                fill(V, E, r, r, hs)
        for p in bad:  # not split: the set's diagonal entries too, its laws are suspect
            i, j = int(rows[p]), int(cols[p])
            suspect = [(i, j), (i, i), (j, j)] if pw.diagonal and not split else [(i, j)]
            redo.update(dict.fromkeys(suspect))
        if bar is not None:
            bar.update(len(rows) + (B1 if pw.diagonal and not split and n_block == 0 else 0))
    if bar is not None:
        bar.close()
    method = stderr = None
    if return_info:
        method = {}
        on_diagonal = pw.diagonal[0] if pw.diagonal else (pw.nngp, pw.ntk)
        for n, (kernel, h) in enumerate(zip(("nngp", "ntk"), (pw.nngp, pw.ntk))):
            m = np.full(shape, pw.compiled.methods[h.name], dtype=object)
            if symmetric:
                np.fill_diagonal(m, pw.compiled.methods[on_diagonal[n].name])
            method[kernel] = m
        stderr = {k: np.zeros(shape) for k in ("nngp", "ntk")}
    sampled, worst = _whole_program_entries(
        body, readout, X, B1, list(redo), limit_kw, out, err, method, stderr
    )
    if not return_info:
        return KernelResult(out["nngp"], out["ntk"], {}, {}, {}, None, symmetric), sampled, worst
    assert method is not None and err is not None and stderr is not None
    res = KernelResult(
        out["nngp"],
        out["ntk"],
        {k: v.astype(str) for k, v in method.items()},
        err,
        stderr,
        None,
        symmetric,
    )
    return res, sampled, worst


def _whole_program_entries(
    body: list[Layer],
    readout: Dense,
    X: np.ndarray,
    B1: int,
    redo: list[tuple[int, int]],
    limit_kw: dict[str, Any],
    out: dict[str, np.ndarray],
    err: dict[str, np.ndarray] | None,
    method: dict[str, np.ndarray] | None,
    stderr: dict[str, np.ndarray] | None,
) -> tuple[int, float]:
    """Fill the entries ``redo`` (stacked row indices) from the limit of one program on
    their inputs only (``Program.limit(**limit_kw)``, which may use Monte Carlo); returns
    how many of their values (both kernels) were sampled, and the largest standard error."""
    if not redo:
        return 0, 0.0
    symmetric = X.shape[0] == B1
    first = sorted({i for i, _ in redo} | ({j for _, j in redo} if symmetric else set()))
    second = [] if symmetric else sorted({j for _, j in redo})
    at = {r: k for k, r in enumerate(first + second)}
    sub = X[first + second]
    B1s = len(first)
    pairs = [(at[i], at[j] if symmetric else B1s + second.index(j)) for i, j in redo]
    with paused_gc():
        p, nngp_h, ntk_h = _build(body, readout, sub, B1s, pairs, "kernel_entries")
        lim = p.limit(**limit_kw)
    sampled, worst = 0, 0.0
    for (i, j), (a, b) in zip(redo, pairs):
        jc = j if symmetric else j - B1
        bc = b if symmetric else b - B1s
        for kind, hs in (("nngp", nngp_h), ("ntk", ntk_h)):
            name = hs[a, bc].name
            cells = [(i, jc), (jc, i)] if symmetric else [(i, jc)]
            se = lim.stderrs[name]
            sampled += lim.methods[name] == "montecarlo"
            worst = max(worst, se)
            for cell in cells:
                out[kind][cell] = lim.values[name]
                if err is not None and method is not None and stderr is not None:
                    err[kind][cell] = lim.errors[name]
                    method[kind][cell] = lim.methods[name]
                    stderr[kind][cell] = se
    return sampled, worst


def _kernels(
    key: Any,
    body: list[Layer],
    readout: Dense,
    X: np.ndarray,
    B1: int,
    name: str,
    where: str,
    knob: str,
    return_info: bool,
    batch_size: Any,
    pairwise: Any,
    limit_kw: dict[str, Any],
) -> KernelResult:
    """NNGP and NTK of the network ``body + [readout]`` on the stacked inputs ``X``
    (``B1`` rows of the first inputs): entry by entry through compiled limits
    (:func:`_pairwise_kernels`), or — with ``pairwise=False``, ``method="montecarlo"``,
    or an entry program that needs Monte Carlo — as the limit of one program holding
    every entry."""
    if not isinstance(return_info, bool):
        raise ProgramTypeError(f"{where}: return_info must be a bool, got {return_info!r}")
    if not isinstance(pairwise, bool):
        raise ProgramTypeError(f"{where}: pairwise must be a bool, got {pairwise!r}")
    if batch_size is not None and (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, numbers.Integral)
        or batch_size < 1
    ):
        raise ProgramValueError(
            f"{where}: batch_size must be None or an int ≥ 1 (kernel entries evaluated "
            f"together), got {batch_size!r}"
        )
    if pairwise and limit_kw.get("method", "auto") in _PAIRWISE_METHODS:
        Program("limit options").limit(**limit_kw)  # validates the options, by name
        done = _pairwise_kernels(
            key, body, readout, X, B1, where, knob, return_info, batch_size, limit_kw
        )
        if done is not None:
            res, sampled, worst = done
            _warn_montecarlo(sampled, res.entries, worst, limit_kw, where)
            return res
    pairs = _entry_pairs(X.shape[0], B1)
    dense = sum(isinstance(la, Dense) for la in _flat_all(_Serial((*body, readout))))
    rows = f"B={B1}" if X.shape[0] == B1 else f"B={B1}×{X.shape[0] - B1}"
    _check_memory(len(pairs), dense, f"{where} on {rows} inputs", knob)
    with paused_gc():
        p, nngp_h, ntk_h = _build(body, readout, X, B1, pairs, name)
        lim = p.limit(**limit_kw)
    res = _result(lim, nngp_h, ntk_h, with_errors=return_info)
    worst = max(float(s.max()) for s in res.stderr.values())
    _warn_montecarlo(res.montecarlo, res.entries, worst, limit_kw, where)
    return res


# ---------------------------------------------------------------------------------------
# The network as an nn.Model


@dataclass(frozen=True)
class _Reg:
    """A vector of the model's forward, by the name it is stored under."""

    name: str


@dataclass(frozen=True)
class _DenseOp:
    """``dst = P_weight · src (+ P_bias)``; ``src`` None: the input row ``ξ``."""

    weight: str
    bias: str | None
    src: str | None
    dst: str


@dataclass(frozen=True)
class _MapOp:
    """``dst = layer(src)`` coordinatewise (a nonlinearity or LayerNorm)."""

    layer: _Vectorwise
    src: str
    dst: str


@dataclass(frozen=True)
class _SumOp:
    """``dst = Σ srcs`` (FanInSum)."""

    srcs: tuple[str, ...]
    dst: str


class _ModelWriter(_Writer):
    """Compiles a network into the parameters of an :class:`~tensorprog.nn.Model` and a
    list of operations its forward replays."""

    def __init__(self, model: Model, d_in: int) -> None:
        super().__init__()
        self.model = model
        self.d_in = d_in
        self.ops: list[_DenseOp | _MapOp | _SumOp] = []

    def dense_layer(self, layer: Dense, flow: Any) -> _Reg:
        self.dense += 1
        ell = self.dense
        shape = ("n", self.d_in) if flow is _DATA else ("n", "n")
        self.model.param(f"W{ell}", shape, init_std=layer.W_std)
        bias = f"b{ell}" if layer.b_std else None
        if bias is not None:
            self.model.param(bias, ("n",), init_std=layer.b_std)
        dst = self.fresh(f"h{ell}")
        self.ops.append(_DenseOp(f"W{ell}", bias, None if flow is _DATA else flow.name, dst))
        return _Reg(dst)

    def vectorwise(self, layer: _Vectorwise, flow: _Reg) -> _Reg:
        dst = self.fresh(layer._base(self.dense))
        self.ops.append(_MapOp(layer, flow.name, dst))
        return _Reg(dst)

    def fan_in_sum(self, flow: tuple[_Reg, ...]) -> _Reg:
        dst = self.fresh(f"s{self.dense}")
        self.ops.append(_SumOp(tuple(f.name for f in flow), dst))
        return _Reg(dst)

    def forward(self, readout: str) -> Any:
        """The forward ``f(p, ξ)``: the operations, then ``P_readout · x``."""
        ops = tuple(self.ops)
        last = ops[-1].dst

        def f(p: Any, xi: np.ndarray) -> Any:
            env: dict[str, Any] = {}
            for op in ops:
                if isinstance(op, _DenseOp):
                    h = getattr(p, op.weight) @ (xi if op.src is None else env[op.src])
                    env[op.dst] = h if op.bias is None else h + getattr(p, op.bias)
                elif isinstance(op, _MapOp):
                    env[op.dst] = op.layer._one(env[op.src], op.dst)
                else:
                    env[op.dst] = lincomb([(None, env[s]) for s in op.srcs], name=op.dst)
            return getattr(p, readout) @ env[last]

        return f


def _positive_int(x: Any, arg: str) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < 1:
        raise ProgramValueError(f"model: {arg} must be an int ≥ 1, got {x!r}")
    return int(x)


# ---------------------------------------------------------------------------------------
# Results and validation (shared with tensorprog.nn.kernels)


@dataclass(frozen=True, eq=False)
class KernelResult:
    r"""NNGP and NTK with the method and the error of every entry
    (``kernels(..., return_info=True)``, ``kernel_fn(..., return_info=True)``).

    Attributes
    ----------
    nngp, ntk : numpy.ndarray, shape (B, B) or (B1, B2)
        The kernels.
    method : dict of str to numpy.ndarray
        ``method["nngp"]``, ``method["ntk"]``: arrays of ``"exact"``,
        ``"quadrature"`` or ``"montecarlo"`` — the least precise method among the
        expectations the entry depends on (:meth:`tensorprog.Limit.method`).
    error : dict of str to numpy.ndarray
        Estimated absolute errors: the Monte Carlo standard error of an entry
        computed by Monte Carlo; otherwise the first-order sum
        :math:`\sum_m |\partial\,\mathrm{entry}/\partial m|\,e_m` of the error
        estimates :math:`e_m` of the entry's Moments (0 for exact ones; for quadrature
        the difference of two rules, usually far above the actual error).
    stderr : dict of str to numpy.ndarray
        Monte Carlo standard errors (0 where no Monte Carlo was used).
    limit : tensorprog.Limit or None
        The limit of the one program holding every entry (``pairwise=False``, or when
        the entry program needs Monte Carlo), for everything else; None when the entries
        were computed one by one through a compiled limit (the default).
    symmetric : bool
        ``True`` for the kernel of one set of inputs with itself (entries ``[i, j]``
        and ``[j, i]`` are one scalar), ``False`` for a cross-kernel.

    Iterating yields ``nngp, ntk``, so ``nngp, ntk = kernels(..., return_info=True)``
    unpacks like the plain result.
    """

    nngp: np.ndarray
    ntk: np.ndarray
    method: dict[str, np.ndarray]
    error: dict[str, np.ndarray]
    stderr: dict[str, np.ndarray]
    limit: Any
    symmetric: bool = True

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.nngp, self.ntk))

    def _distinct(self, a: np.ndarray) -> np.ndarray:
        return a[np.triu_indices(a.shape[0])] if self.symmetric else a.ravel()

    @property
    def entries(self) -> int:
        """Number of distinct entries of one kernel (``B(B+1)/2`` or ``B1·B2``)."""
        return int(self._distinct(self.nngp).size)

    @property
    def montecarlo(self) -> int:
        """Number of distinct entries (both kernels) computed by Monte Carlo."""
        return int(
            sum(np.count_nonzero(self._distinct(m) == "montecarlo") for m in self.method.values())
        )


def _result(lim: Any, nngp_h: np.ndarray, ntk_h: np.ndarray, with_errors: bool) -> KernelResult:
    """Values, methods, standard errors and (with ``with_errors``) errors of both kernels
    (arrays of Scalar handles of one shape; a handle may sit at several places): the
    limit's own, which carry the first-order errors of the Moments through the
    readout sums (``Σ_m |∂entry/∂m| e_m``). Tables are read once (a B = 64, depth-10
    program has 52 000 scalars)."""
    values, methods, stderrs = lim.values, lim.methods, lim.stderrs
    errors = lim.errors if with_errors else {}
    shape = nngp_h.shape
    value = {k: np.empty(shape) for k in ("nngp", "ntk")}
    method = {k: np.empty(shape, dtype=object) for k in ("nngp", "ntk")}
    stderr = {k: np.zeros(shape) for k in ("nngp", "ntk")}
    error = {k: np.zeros(shape) for k in ("nngp", "ntk")}
    for kind, handles in (("nngp", nngp_h), ("ntk", ntk_h)):
        for idx, h in np.ndenumerate(handles):
            name = h.name
            value[kind][idx] = values[name]
            method[kind][idx] = methods[name]
            stderr[kind][idx] = stderrs[name]
            if with_errors:
                error[kind][idx] = errors[name]
    symmetric = shape[0] == shape[1] and all(
        h[i, j] is h[j, i] for h in (nngp_h,) for i in range(shape[0]) for j in range(i)
    )
    return KernelResult(
        value["nngp"],
        value["ntk"],
        {k: v.astype(str) for k, v in method.items()},
        error,
        stderr,
        lim,
        symmetric,
    )


def _validate_inputs(
    X1: Any, X2: Any, where: str, names: tuple[str, str]
) -> tuple[np.ndarray, int, list[tuple[int, int]]]:
    """``(X1 stacked on X2, B1, pairs)``: the stacked row indices ``(i, j)`` of the
    kernel entries (``i ≤ j < B1`` without ``X2``, ``i < B1 ≤ j`` with it)."""
    X, B1 = _stack_inputs(X1, X2, where, names)
    return X, B1, _entry_pairs(X.shape[0], B1)


def _entry_pairs(B: int, B1: int) -> list[tuple[int, int]]:
    """The kernel entries' stacked row indices (:func:`_validate_inputs`)."""
    if B == B1:
        return [(i, j) for i in range(B1) for j in range(i, B1)]
    return [(i, j) for i in range(B1) for j in range(B1, B)]


def _stack_inputs(X1: Any, X2: Any, where: str, names: tuple[str, str]) -> tuple[np.ndarray, int]:
    """``(X1 stacked on X2, B1)``, validated (errors name the argument)."""
    A = _matrix(X1, names[0], where)
    B1 = A.shape[0]
    if X2 is None:
        return A, B1
    A2 = _matrix(X2, names[1], where)
    if A2.shape[1] != A.shape[1]:
        raise ProgramValueError(
            f"{where}: {names[1]} must have as many columns (features) as {names[0]}: "
            f"{names[0]} has shape {A.shape}, {names[1]} has shape {A2.shape}"
        )
    return np.vstack([A, A2]), B1


def _matrix(X: Any, arg: str, where: str) -> np.ndarray:
    """A finite (B, d) float array, or an error naming ``arg``."""
    if isinstance(X, Handle):
        raise ProgramTypeError(
            f"{where}: {arg} must be a (B, d) array of inputs, got a program handle"
        )
    try:
        arr = np.asarray(X)
    except Exception as exc:  # noqa: BLE001 - any failure means "not an array"
        raise ProgramTypeError(
            f"{where}: {arg} must be a (B, d) array of real numbers ({exc})"
        ) from None
    if (
        arr.dtype == object
        or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool)
        or np.iscomplexobj(arr)
    ):
        raise ProgramTypeError(
            f"{where}: {arg} must be a (B, d) array of real numbers, got dtype {arr.dtype}"
        )
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ProgramValueError(
            f"{where}: {arg} must be a non-empty 2-D array (B inputs as rows, d features), "
            f"got shape {arr.shape}"
        )
    arr = arr.astype(float)
    if not np.all(np.isfinite(arr)):
        raise ProgramValueError(f"{where}: {arg} must be finite; it has NaN or inf entries")
    return arr


def _check_nonlin(nonlin: Any, where: str) -> Nonlinearity:
    """A one-argument nonlinearity without parameters, real and finite on the line."""
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
    return phi


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


def _check_memory(entries: int, dense: int, what: str, knob: str) -> None:
    """Refuse, before building anything, a kernel program that would not fit in memory:
    ``entries`` kernel entries of ``2·dense + 1`` scalars each (two Moments per Dense
    layer and the two readouts; ``dense`` Dense layers, the readout included)."""
    size = entries * (2 * dense + 1)
    require_memory(
        f"{what} ({size:,} instructions)",
        _BYTES_PER_INSTRUCTION * size,
        knob,
        "pass fewer inputs at a time, e.g. blocks of the kernel matrix (cross-kernels with X2)",
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
