r"""``nn.classify(model, param, optimizer)``: TP4's classification of any model's training.

The classification of abc-parametrized MLPs [TP4 Def 3.2, Thms 3.3–3.8]
(:func:`tensorprog.nn.parametrization.classify`) generalised to the parameter classes of
[TP5 App B, Table 3] (:class:`~tensorprog.nn.ParamClass`), with the exponents each
parameter gets in :func:`tensorprog.nn.train`. It sits above ``nn.train`` because it
reads the same per-parameter scalings.

References
----------
[TP4] G. Yang, E. J. Hu, *Feature Learning in Infinite-Width Neural Networks*, ICML 2021,
arXiv:2011.14522.
[TP5] G. Yang et al., *Tensor Programs V: Tuning Large Neural Networks via Zero-Shot
Hyperparameter Transfer*, NeurIPS 2021, arXiv:2203.03466.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from .. import ProgramTypeError, ProgramValueError
from . import parametrization as _pz
from .model import Model
from .optim import SGD
from .parametrization import (
    _HALF,
    Classification,
    ParamClass,
    ParamExponents,
    _limit_problems,
    _model_failures,
    _verdicts,
    muP,
)
from .train import _centring, _scaling

__all__ = ["classify", "classify_model"]


def classify(param: Any, *args: Any, **kwargs: Any) -> Classification:
    """``nn.classify``: an MLP's :class:`~tensorprog.nn.ABC`, or a model's training.

    ``classify(abc)`` is :func:`tensorprog.nn.parametrization.classify` [TP4 §3.2];
    ``classify(model, param, optimizer)`` is :func:`classify_model`.

    Examples
    --------
    >>> from tensorprog import nn
    >>> nn.classify(nn.muP(2)).regime
    'feature learning'
    """
    if isinstance(param, Model):
        return classify_model(param, *args, **kwargs)
    if args or kwargs:
        raise ProgramTypeError(
            "nn.classify takes one ABC (nn.classify(nn.muP(L))) or a model with its "
            "parametrization and optimizer (nn.classify(model, param, optimizer)); got "
            f"{type(param).__name__} with {len(args) + len(kwargs)} more arguments"
        )
    return _pz.classify(param)


def classify_model(model: object, param: object = None, optimizer: object = None) -> Classification:
    r"""Classify the training of any :class:`~tensorprog.nn.Model` by parameter class.

    The classification of [TP4 §3.2] generalised from MLP layers to the parameter classes
    of [TP5 App B] (:class:`ParamClass`); used by :func:`classify` when it is given a model.
    Each parameter gets its ``(a, b, c)`` from ``param`` (the same :class:`Scaling`
    :func:`tensorprog.nn.train` uses), hence ``s = a+b`` (its initial entries are
    :math:`\Theta(n^{-s})`) and ``e = c+2a`` (its effective learning rate
    :math:`n^{-e}`), and the exponents of :class:`ParamExponents`. With
    :math:`m=\min_{\text{out}}\min(s_{\rm out},e_{\rm out})` the size exponent of
    :math:`\partial f/\partial x` [TP4 Def 3.2]:

    * :math:`r=\min_P r_P` over input, hidden and vector-like parameters
      (:math:`r_P=e_P+m` for input/vector-like, :math:`e_P+m-1` for hidden — TP4's
      :math:`r_l`, [TP4 Def 3.2, Prop 5.3]); :math:`\Delta x_t=\Theta(n^{-r})`;
    * stable [TP4 Thm 3.3] iff every input weight has :math:`s=0`, every hidden weight
      :math:`s=\tfrac12`, every output weight :math:`s\ge\tfrac12`, :math:`e\ge1` and
      :math:`s+r\ge1`, and :math:`r\ge0`; moreover vector-like parameters (biases and
      gains, input-like [TP4 App C.1]) need :math:`s\ge0`, scalar-like ones
      :math:`e\ge0` (and :math:`a\ge0` if their mean is nonzero) — they feed :math:`f`
      or the features directly;
    * nontrivial [TP4 Thm 3.4, Prop 5.5] iff stable and an output weight is initialized
      maximally (:math:`s+r=1`) or updated maximally (:math:`e=1`), or a scalar-like
      parameter is updated by :math:`\Theta(1)` (:math:`e=0`);
    * feature learning iff stable, nontrivial and :math:`r=0` [TP4 Thm 3.6]; kernel
      regime iff :math:`r>0` [TP4 Thm 3.8, Cor 3.9].

    For the MLP ``W_in, W_h…, W_out`` of an :class:`ABC` this is exactly
    ``classify(abc)`` (tested over μP, SP, NTK, MF and random abc). The presets are
    TP5's Table 3 (App B); μP classifies as feature learning with every parameter
    updated maximally. ``limit_supported`` says whether :func:`tensorprog.nn.train`
    builds the limit: it refuses diverging width powers, with the exponents of the
    program it builds — kernel-regime runs (NTK, SP with ``lr·n^{-1}``) are centred
    (``f_t − f_0``, gradients normalised by :math:`n^m`; see :func:`tensorprog.nn.train`),
    but a trained scalar-like parameter cannot be centred, so a TP4-stable kernel-regime
    run may have ``limit_supported = False``; ``limit_problems`` says why. (Whether the
    forward returns the output weights' uses unchanged, which centring needs, is seen
    only when nn.train traces it.) Conversely
    nn.train accepts smaller (vanishing) initialisations than Thm 3.3's equalities,
    which are degenerate (e.g. :math:`h_0\to0`) and classify as unstable.

    SGD with momentum :math:`\mu<1` has the same exponents (its updates are fixed linear
    combinations of the gradients). Only :class:`~tensorprog.nn.SGD` is classified so
    far (Adam's column of TP5 Table 3 needs [TP4b §2.8]'s classification).

    Parameters
    ----------
    model : nn.Model
        With at least one output weight ``(k, "n")`` (the readout).
    param : default ``nn.muP()``
        ``nn.muP()``, ``nn.SP()``, ``nn.NTK()``, ``nn.abcd({...})`` or an
        :class:`ABC` (as for :func:`tensorprog.nn.train`).
    optimizer : nn.SGD, default ``nn.SGD(1.0)``

    Returns
    -------
    Classification
        With ``parameters`` (one :class:`ParamExponents` each), ``model``,
        ``limit_supported`` and ``limit_problems`` set; ``r_layers`` and
        ``maximal_updates`` follow the order of ``model.params`` (feature parameters,
        then every parameter).

    Raises
    ------
    ProgramTypeError
        ``optimizer`` is not an ``nn.SGD``, ``param`` not a parametrization.
    ProgramValueError
        The model has no output weight.

    Examples
    --------
    >>> import tensorprog as tp
    >>> from tensorprog import nn
    >>> m = nn.Model("mlp")
    >>> _ = m.param("W_in", ("n", 2)); _ = m.param("W", ("n", "n")); _ = m.param("W_out", (1, "n"))
    >>> @m.forward
    ... def f(p, xi):
    ...     return p.W_out @ tp.tanh(p.W @ tp.tanh(p.W_in @ xi))
    >>> nn.classify(m, nn.muP(), nn.SGD(0.5)).regime
    'feature learning'
    >>> c = nn.classify(m, nn.SP(), nn.SGD(0.5))
    >>> c.regime, c.limit_supported
    ('unstable', False)
    """
    if not isinstance(model, Model):
        raise ProgramTypeError(
            f"nn.classify(model, param, optimizer): model must be an nn.Model, got "
            f"{type(model).__name__}"
        )
    opt = SGD(1.0) if optimizer is None else optimizer
    if not isinstance(opt, SGD):
        raise ProgramTypeError(
            f"nn.classify: optimizer must be nn.SGD(lr, momentum) — only SGD is classified so "
            f"far (Adam needs the entrywise classification of TP4b §2.8); got {optimizer!r}"
        )
    param = muP() if param is None else param
    specs = list(model.params.values())
    outs = [sp for sp in specs if sp.cls is ParamClass.OUTPUT]
    if not outs:
        raise ProgramValueError(
            f"nn.classify: model {model.name!r} has no output weight (shape (k, 'n')); the "
            f"classification reads the readout's exponents [TP4 Thm 3.3]"
        )
    sc = {sp.name: _scaling(param, sp) for sp in specs}
    trained = {sp.name: sp.lr_mult != 0.0 for sp in specs}
    inf = None  # no update

    def upd(name: str, k: Fraction) -> Fraction | None:
        return k if trained[name] else inf

    # readout: the output weights giving the largest d f / d x and f_0, updates
    s_out = min(sc[o.name].s for o in outs)
    e_outs = [sc[o.name].e for o in outs if trained[o.name]]
    u = min(e_outs) if e_outs else math.inf  # an untrained readout is never updated
    m = min(s_out, u)
    feat = (ParamClass.INPUT, ParamClass.HIDDEN, ParamClass.VECTOR)
    rows = []
    for sp in specs:
        g = sc[sp.name]
        if sp.cls in feat:
            r_p = upd(sp.name, g.e + m - (1 if sp.cls is ParamClass.HIDDEN else 0))
            init = g.s - _HALF if sp.cls is ParamClass.HIDDEN else g.s
            out = None if r_p is None else s_out + r_p - 1
        elif sp.cls is ParamClass.OUTPUT:
            r_p, init, out = None, g.s - _HALF, upd(sp.name, g.e - 1)
        else:
            init = g.a if sp.init_mean != 0.0 else None  # P_0 = n^{-a}·init_mean
            r_p, out = None, upd(sp.name, g.e)
        rows.append(ParamExponents(sp.name, sp.cls, g, init, r_p, out))
    r_feat = [x.feature_update for x in rows if x.feature_update is not None]
    # no trained parameter feeds the features: they never move, r = +inf
    r = min(r_feat) if r_feat else math.inf
    failing = _model_failures(rows, r)
    conditions = {k: not v for k, v in failing.items()}
    scalar_moves = any(x.cls is ParamClass.SCALAR and x.output_update == 0 for x in rows)
    v = _verdicts(conditions, s_out, u, r, scalar_moves)
    nontrivial = v["nontrivial"]
    maximal = tuple(
        (x.feature_update == 0) if x.cls in feat else (x.output_update == 0) for x in rows
    )
    contributing = tuple(x.name for x in rows if x.output_update == 0) if nontrivial else ()
    _, kernel, m_prog = _centring(model, sc)  # nn.train's default centring
    problems = tuple(p for sp in specs for p in _limit_problems(sp, sc[sp.name], m_prog, kernel))
    return Classification(
        param=param,
        r=r,
        r_layers=tuple(r_feat),
        maximal_updates=maximal,
        feature_learning_layers=tuple(
            i
            for i, x in enumerate([y for y in rows if y.feature_update is not None], 1)
            if nontrivial and min(r_feat[:i]) == 0
        ),
        contributing_layers=tuple(
            i for i, x in enumerate(rows, 1) if nontrivial and x.output_update == 0
        ),
        **v,
        equivalent_to=(),
        model=model.name,
        parameters=tuple(rows),
        contributing_params=contributing,
        limit_supported=not problems,
        limit_problems=problems,
    )
