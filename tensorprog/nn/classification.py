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
[TP4b] G. Yang, E. Littwin, *Tensor Programs IVb: Adaptive Optimization in the
Infinite-Width Limit*, arXiv:2308.01814, 2023.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Any

from .. import ProgramTypeError, ProgramValueError
from . import parametrization as _pz
from .model import Model
from .operator import term_scaling
from .optim import SGD, Entrywise
from .parametrization import (
    _HALF,
    _MODEL_COND_TEXT,
    Classification,
    ParamClass,
    ParamExponents,
    _fmt,
    _limit_problems,
    _model_failures,
    _verdicts,
    muP,
)
from .train import _centring, _entrywise_expos, _scaling

__all__ = ["classify", "classify_model", "EntrywiseClassification"]


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
    combinations of the gradients). Entrywise optimizers (:class:`~tensorprog.nn.Adam`,
    :class:`~tensorprog.nn.SignSGD`) are classified by :func:`classify_entrywise`
    [TP4b §2.8].

    Parameters
    ----------
    model : nn.Model
        With at least one output weight ``(k, "n")`` (the readout).
    param : default ``nn.muP()``
        ``nn.muP()``, ``nn.SP()``, ``nn.NTK()``, ``nn.abcd({...})`` or an
        :class:`ABC` (as for :func:`tensorprog.nn.train`).
    optimizer : nn.SGD, nn.Adam or nn.SignSGD, default ``nn.SGD(1.0)``

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
    if isinstance(opt, Entrywise):
        return classify_entrywise(model, param, opt)
    if not isinstance(opt, SGD):
        raise ProgramTypeError(
            f"nn.classify: optimizer must be nn.SGD(lr, momentum), nn.Adam(...) or "
            f"nn.SignSGD(...); got {optimizer!r}"
        )
    param = muP() if param is None else param
    specs, outs = _specs_and_outputs(model, "[TP4 Thm 3.3]")
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
    _, kernel, m_prog = _centring(model, sc)  # nn.train's default centring
    problems = tuple(p for sp in specs for p in _limit_problems(sp, sc[sp.name], m_prog, kernel))
    return Classification(
        param=param,
        r=r,
        **_layer_fields(rows, v["nontrivial"], v["nontrivial"]),
        **v,
        equivalent_to=(),
        model=model.name,
        parameters=tuple(rows),
        limit_supported=not problems,
        limit_problems=problems,
    )


def _specs_and_outputs(model: Model, ref: str) -> tuple[list, list]:
    """The model's parameter specs and its output weights (at least one: the readout's
    exponents decide stability, ``ref``)."""
    specs = list(model.params.values())
    outs = [sp for sp in specs if sp.cls is ParamClass.OUTPUT]
    if not outs:
        raise ProgramValueError(
            f"nn.classify: model {model.name!r} has no output weight (shape (k, 'n')); the "
            f"classification reads the readout's exponents {ref}"
        )
    return specs, outs


def _layer_fields(rows: list, nontrivial: bool, features_move: bool) -> dict:
    """The per-parameter fields of a model's :class:`Classification` (declaration
    order): ``r_layers``, ``maximal_updates``, ``feature_learning_layers`` (when
    ``features_move``), ``contributing_layers`` and ``contributing_params``."""
    feats = [x for x in rows if x.feature_update is not None]
    r_feat = [x.feature_update for x in feats]
    return dict(
        r_layers=tuple(r_feat),
        maximal_updates=tuple(
            (x.feature_update == 0) if x.feature_update is not None else (x.output_update == 0)
            for x in rows
        ),
        feature_learning_layers=tuple(
            i for i in range(1, len(feats) + 1) if features_move and min(r_feat[:i]) == 0
        ),
        contributing_layers=tuple(
            i for i, x in enumerate(rows, 1) if nontrivial and x.output_update == 0
        ),
        contributing_params=tuple(x.name for x in rows if nontrivial and x.output_update == 0),
    )


# ---------------------------------------------------------------------------------------
# Entrywise optimizers (Adam, SignSGD) [TP4b §2.8]

_COND_OUT_BC = "output weights: b <= c"
# the readout's update condition reads c+a >= 1 for entrywise updates (r_{L+1} >= 0, [TP4b Def 2.8.5])
_ENTRYWISE_COND_TEXT = {_pz._COND_READOUT_UPDATE: "output weights: c+a >= 1 (r_{L+1} >= 0)"}
_COND_FAITHFUL = (
    "faithful at init: d = a + s_out (input, vector-like, hidden), d = a (output, scalar-like)"
)


@dataclasses.dataclass(frozen=True, repr=False)
class EntrywiseClassification(Classification):
    """:class:`~tensorprog.nn.parametrization.Classification` of a training with an
    entrywise optimizer (:func:`classify_entrywise`).

    Attributes
    ----------
    optimizer : str
        ``"Adam"`` or ``"SignSGD"``.
    faithful : dict
        ``{parameter: bool}``: its ``ε_P`` is of the size of its gradient entries at
        initialization [TP4b Def 2.8.8, Lemma 2.8.11].
    notes : tuple of str
        Remarks, e.g. [TP4b Remark 2.2.7] for SP with learning rate Θ(1/n).
    """

    optimizer: str = "Adam"
    faithful: dict = dataclasses.field(default_factory=dict, hash=False)
    notes: tuple[str, ...] = ()

    def explain(self) -> str:
        """Explain the verdict with the exponents and [TP4b §2.8]'s theorem numbers."""
        rows = self.parameters

        def fx(x: Any) -> str:
            return "-" if x is None else _fmt(x)

        lines = [f"model {self.model!r} under {self.param!r}, {self.optimizer} (entrywise)"]
        lines.append(
            "  parameter        class            a     b     c     d  | init  r_P   f-update faithful"
        )
        for x in rows:
            g = x.scaling
            lines.append(
                f"  {x.name:<16} {x.cls.value:<15} {_fmt(g.a):>5} {_fmt(g.b):>5} {_fmt(g.c):>5} "
                f"{fx(g.d):>5} | {fx(x.init):>5} {fx(x.feature_update):>5} "
                f"{fx(x.output_update):>5}    {'yes' if self.faithful.get(x.name) else 'NO'}"
            )
        lines.append(
            "  (exponents k of Theta(n^-k); Q keeps each update entry Theta(1): r_P = c+a for "
            "input and vector-like, c+a-1 for hidden weights; f-update of output weights "
            "c+a-1  [TP4b Def 2.8.5])"
        )
        lines.append(f"r = {fx(self.r) if self.r != math.inf else 'inf'}")
        for name, ok in self.conditions.items():
            lines.append(f"  [{'ok  ' if ok else 'FAIL'}] {name}")
        lines.append(f"stable: {'yes' if self.stable else 'no'}  [TP4b Thm 2.8.12]")
        if self.stable:
            lines.append(f"nontrivial: {'yes' if self.nontrivial else 'no'}  [TP4b Thm 2.8.15]")
        lines.append(
            f"regime: {self.regime}"
            + {
                "feature learning": " (r = 0)  [TP4b Thm 2.8.19]",
                "operator": f" (r = {_fmt(self.r) if self.r != math.inf else 'inf'} > 0: f_(t+1) - f_t "
                "- eta K(f_t) -> 0, a nonlinear kernel)  [TP4b Thm 2.8.19, Cor 2.8.20]",
            }.get(self.regime, "")
        )
        lines.extend(self.notes)
        if self.limit_supported and self.regime == "operator":
            lines.append(
                "nn.train: builds the limit of the centred run, f_t - f_0, as the K_Q "
                "recursion  [TP4b Thm 2.4.7, 2.4.9]"
            )
        elif self.limit_supported:
            lines.append("nn.train: builds the limit")
        else:
            lines.append("nn.train: refuses the limit: " + "; ".join(self.limit_problems))
        return "\n".join(lines)


def _entrywise_limit_problems(spec: Any, sc: Any, s_out: Any = None) -> list[str]:
    """Why :func:`tensorprog.nn.train` refuses the limit of an entrywise run: the
    initial-value powers of SGD's program, a diverging learning-rate power ``n^{-k_lr}``,
    a vanishing ``ε_P`` relative to the program's gradients (``k_ε > 0``). In the operator
    regime (``s_out < 1``: the centred ``K_Q`` recursion of :mod:`tensorprog.nn.operator`)
    the initial values with gradients normalised by ``n^{s_out}`` and the terms of
    ``K_Q`` (:meth:`~tensorprog.nn.operator.TermScaling.problems`); a trained scalar-like
    parameter cannot be centred."""
    if s_out is not None and s_out < 1:
        out = [
            p for p in _limit_problems(spec, sc, m=s_out, kernel=True) if "learning rate" not in p
        ]
        if spec.cls is ParamClass.SCALAR and spec.lr_mult != 0.0:
            out.append(
                f"{spec.name!r} ({spec.cls.value}): a trained scalar-like parameter sees the "
                f"Gaussian-process f_0 through its gradient; the operator-regime run cannot be "
                f"centred (freeze it: lr_mult=0)"
            )
        ts = term_scaling(spec.name, spec.cls, spec.lr_mult, sc.a, sc.c, sc.d, s_out)
        return out + ts.problems()
    out = [p for p in _limit_problems(spec, sc) if "learning rate" not in p]
    k_lr, k_eps = _entrywise_expos(spec.cls, sc)
    if spec.lr_mult != 0.0 and k_lr < 0:
        out.append(
            f"{spec.name!r} ({spec.cls.value}): learning rate has width power n^{_fmt(-k_lr)}"
        )
    if spec.lr_mult != 0.0 and k_eps > 0:
        out.append(
            f"{spec.name!r} ({spec.cls.value}): ε_P relative to its gradient entries has width "
            f"power n^{_fmt(-k_eps)} (vanishes: Q becomes sign-like)"
        )
    return out


def classify_entrywise(model: Model, param: object, opt: Entrywise) -> EntrywiseClassification:
    r"""Classify a model's training with an entrywise optimizer [TP4b §2.8].

        Each parameter ``P = n^{-a} w`` with abcd exponents (:class:`Scaling`; presets: the
        Adam columns of the tables in :mod:`tensorprog.nn.parametrization`). Its update
        ``ΔP = −η n^{-(a+c)} Q(…)`` has entries :math:`\Theta(n^{-(a+c)})` whatever the size of
        the gradients (``Q`` is scale-invariant up to ``ε``), so, in the no-multiplier form of
        TP5 Table 3 and with :math:`s_{
    m out}=\min_{
    m out}(a+b)`:

        * :math:`r_P=c+a` (input weights, vector-like), :math:`c+a-1` (hidden weights: the sum
          over the fan-in is coherent) — [TP4b Def 2.8.5]'s :math:`r_1=c_1+a_1`,
          :math:`r_l=c_l+a_l-1`; :math:`r=\min_P r_P`;
        * output weights move :math:`f` by :math:`\Theta(n^{-(c+a-1)})`, scalar-like ones by
          :math:`\Theta(n^{-(c+a)})`;
        * faithful at init iff :math:`d=a+s_{
    m out}` for input, vector-like and hidden
          weights and :math:`d=a` for output weights [TP4b Def 2.8.8, Lemma 2.8.11, there
          :math:`d_l=a_l+a_{L+1}+b_{L+1}`, :math:`d_{L+1}=a_{L+1}`] (and scalar-like);
        * stable iff stable at init (the conditions of SGD's classification on ``a+b``),
          :math:`r\ge0`, output weights :math:`c+a\ge1`, :math:`s_{
    m out}+r\ge1` and
          :math:`b\le c` [TP4b Thm 2.8.12];
        * nontrivial iff an output weight has :math:`a+c=1` or :math:`s_{
    m out}+r=1`
          [TP4b Thm 2.8.15]; feature learning iff :math:`r=0`, else the **operator regime**
          :math:`f_{t+1}-f_t-\eta\mathcal K(f_t)\to0` [TP4b Thm 2.8.19, Cor 2.8.20]
          (``regime = "operator"``).

        The theorems assume faithfulness at init; an unfaithful parametrization is reported
        (``faithful``) and classified as unstable. [TP4b Remark 2.2.7]: SP with learning rate
        :math:`\Theta(1/n)` (``c = 1``) has :math:`r=0` — its hidden features move by
        :math:`\Theta(1)` under Adam (under SGD it is in the kernel regime) — noted in
        ``notes``; its logits are not stable (:math:`s_{\rm out}+r=\tfrac12`).

        Examples
        --------
        >>> import tensorprog as tp
        >>> from tensorprog import nn
        >>> m = nn.Model("relu2")
        >>> for name, shape in [("U", ("n", 3)), ("V", ("n", "n")), ("w", (1, "n"))]:
        ...     _ = m.param(name, shape)
        >>> @m.forward
        ... def f(p, xi):
        ...     return p.w @ tp.relu(p.V @ tp.relu(p.U @ xi))
        >>> c = nn.classify(m, nn.muP(), nn.Adam(0.01))
        >>> c.regime, c.r, c.limit_supported
        ('feature learning', Fraction(0, 1), True)
        >>> nn.classify(m, nn.NTK(), nn.Adam(0.01)).regime
        'operator'
    """
    param = muP() if param is None else param
    specs, outs = _specs_and_outputs(model, "[TP4b Thm 2.8.12]")
    sc = {sp.name: _scaling(param, sp, opt) for sp in specs}
    for sp in specs:
        if sc[sp.name].d is None:
            raise ProgramValueError(
                f"nn.classify: parameter {sp.name!r} has no exponent d (ε_P = eps·n^(-d)) for "
                f"{type(opt).__name__}; use a preset with an Adam column or nn.abcd"
            )
    trained = {sp.name: sp.lr_mult != 0.0 for sp in specs}
    s_out = min(sc[o.name].s for o in outs)
    feat = (ParamClass.INPUT, ParamClass.HIDDEN, ParamClass.VECTOR)
    rows, faithful = [], {}
    for sp in specs:
        g = sc[sp.name]
        k = g.c + g.a
        if sp.cls in feat:
            r_p = (k - (1 if sp.cls is ParamClass.HIDDEN else 0)) if trained[sp.name] else None
            init = g.s - _HALF if sp.cls is ParamClass.HIDDEN else g.s
            out = None if r_p is None else s_out + r_p - 1
            faithful[sp.name] = g.d == g.a + s_out
        elif sp.cls is ParamClass.OUTPUT:
            r_p, init, out = None, g.s - _HALF, (k - 1 if trained[sp.name] else None)
            faithful[sp.name] = g.d == g.a
        else:
            init = g.a if sp.init_mean != 0.0 else None
            r_p, out = None, (k if trained[sp.name] else None)
            faithful[sp.name] = g.d == g.a
        rows.append(ParamExponents(sp.name, sp.cls, g, init, r_p, out))
    r_feat = [x.feature_update for x in rows if x.feature_update is not None]
    r = min(r_feat) if r_feat else math.inf
    conditions = {
        _ENTRYWISE_COND_TEXT.get(k, _MODEL_COND_TEXT.get(k, k)): not v
        for k, v in _model_failures(rows, r).items()
    }
    conditions[_COND_OUT_BC] = all(sc[o.name].b <= sc[o.name].c for o in outs if trained[o.name])
    conditions[_COND_FAITHFUL] = all(faithful[sp.name] for sp in specs if trained[sp.name])
    u_outs = [
        x.output_update + 1
        for x in rows
        if x.cls is ParamClass.OUTPUT and x.output_update is not None
    ]
    u = min(u_outs) if u_outs else math.inf
    scalar_moves = any(x.cls is ParamClass.SCALAR and x.output_update == 0 for x in rows)
    v = _verdicts(conditions, s_out, u, r, scalar_moves)
    if v["regime"] == "kernel":
        v["regime"] = "operator"
    v["nngp"] = False
    nontrivial = v["nontrivial"]
    notes = []
    hidden = [x for x in rows if x.cls is ParamClass.HIDDEN and x.feature_update == 0]
    if hidden and s_out == _HALF:
        notes.append(
            "note [TP4b Remark 2.2.7]: with output weights of SP's size (a+b = 1/2) and hidden "
            "learning rate Theta(1/n), the hidden features move by Theta(1) under an entrywise "
            "optimizer (r = 0: feature learning in the hidden layers, unlike SGD, where SP with "
            "LR Theta(1/n) is in the kernel regime); the logits then grow like n^(1/2) "
            "(a+b+r = 1/2 < 1)"
        )
    problems = tuple(p for sp in specs for p in _entrywise_limit_problems(sp, sc[sp.name], s_out))
    return EntrywiseClassification(
        param=param,
        r=r,
        **_layer_fields(rows, nontrivial, nontrivial or bool(notes)),
        **v,
        equivalent_to=(),
        model=model.name,
        parameters=tuple(rows),
        limit_supported=not problems,
        limit_problems=problems,
        optimizer=type(opt).__name__,
        faithful=faithful,
        notes=tuple(notes),
    )
