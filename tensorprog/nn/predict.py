r"""Mean predictions of infinitely wide networks trained by gradient descent on the MSE.

In the kernel regime (NTK parametrization, infinite width) the trained function moves
linearly with the NTK ``Θ`` [Jacot, Gabriel & Hongler 2018, Eq. (8)]; [Lee et al.
2019, Eqs. (9)–(11)]. On the loss ``(1/2N) Σ (f(ξ_i) − y_i)²`` (``N = y_train.size``,
neural-tangents' normalisation) with learning rate ``η``:

* **gradient flow** (:func:`gradient_descent_mse`, continuous time ``t``, in units of
  ``η``):

  .. math::

      f_t(X) = y + e^{-\eta t\,\Theta/N}\,(f_0(X) - y),\qquad
      f_t(x) = f_0(x) + \Theta(x, X)\,\Theta^{-1}\big(e^{-\eta t\,\Theta/N} - I\big)(f_0(X) - y);

* **gradient descent** (``gradient_descent_mse(..., discrete=True)``, ``t`` whole steps):
  ``f_{t+1}(x) = f_t(x) − (η/N) Θ(x, X)(f_t(X) − y)``, i.e. the same formulas with
  ``e^{-ηtλ/N}`` replaced by ``(1 − ηλ/N)^t`` on each eigenvalue ``λ`` of ``Θ``.

Both are evaluated in the eigenbasis of ``Θ(X, X)`` (``numpy.linalg.eigh``); ``t = None``
(``∞``) uses a Cholesky solve. The kernels come from :func:`tensorprog.nn.kernels` or
:meth:`tensorprog.nn.stax.Layer.kernel_fn` (``Θ`` = the NTK for a trained network, the
NNGP for a network whose last layer only is trained). The conventions, keywords and
return values are those of neural-tangents' ``predict.gradient_descent_mse`` (0.6.5).

Relation to :func:`tensorprog.nn.train_sgd`
-------------------------------------------
``train_sgd(MLP(d, L, φ, NTK(L, init_std=σ)), X, Y, lr=η, steps=T).limit()`` — full-batch
SGD on ``(1/2B) Σ (f − y)²`` of the centred network ``f − f_0``, no biases, first layer
``h¹ = w¹ξ`` with ``w¹`` iid ``N(0, σ²)`` (no ``1/√d``) — is, step for step,
``gradient_descent_mse(Θ, Y, learning_rate=η, discrete=True)(t, 0., 0., Θ_test)`` with

.. math::

    \Theta = \Theta_{NT}(\sqrt d\,X)/\sigma^2,

``Θ_NT = nn.kernels(√d·X, depth=L, nonlin=φ, W_std=σ, b_std=0)[1]``: the input scaling
undoes neural-tangents' ``1/√d``, and ``1/σ²`` converts gradients with respect to
neural-tangents' ``N(0, 1)`` weights ``ω`` (``w = σω``) into gradients with respect to
``w`` (``∂f/∂w = σ^{-1} ∂f/∂ω``, every layer).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg

from .. import ProgramTypeError, ProgramValueError

__all__ = ["gradient_descent_mse"]

PredictFn = Callable[..., Any]


def gradient_descent_mse(
    k_train_train: Any,
    y_train: Any,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    *,
    discrete: bool = False,
) -> PredictFn:
    r"""Mean predictions under gradient flow (or descent) on the MSE (neural-tangents'
    ``predict.gradient_descent_mse``).

    Parameters
    ----------
    k_train_train : array_like, shape (B, B)
        ``Θ(X, X)``, symmetric (the NTK, or the NNGP).
    y_train : array_like, shape (B,) or (B, k)
        Targets; ``N = y_train.size`` normalises the loss ``(1/2N) Σ (f − y)²``.
    learning_rate : float, default 1.0
        ``η > 0``; time is in units of ``η`` (``ηt`` is what matters).
    diag_reg : float, default 0.0
        ``ε ≥ 0``: ``Θ(X, X) + ε·(tr Θ / B)·I`` is used (``ε·I`` with
        ``diag_reg_absolute_scale=True``).
    diag_reg_absolute_scale : bool, default False
    discrete : bool, default False
        ``True``: ``t`` counts whole steps of gradient descent,
        ``f_{t+1}(x) = f_t(x) − (η/N) Θ(x, X)(f_t(X) − y)`` — what
        :func:`tensorprog.nn.train_sgd` computes in the infinite-width limit of an
        NTK-parametrized MLP (module docstring: the mapping of the kernels);
        neural-tangents has no discrete-time predictor. ``t = None`` is then the limit
        ``t → ∞``, which exists when ``η λ_max/N < 2`` (otherwise a
        :class:`tensorprog.ProgramValueError` names ``learning_rate``).

    Returns
    -------
    predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)
        ``t``: a time or an array of times ``≥ 0``, ``None`` for ``t = ∞``;
        ``fx_train_0``, ``fx_test_0``: outputs at ``t = 0`` on the training and test
        inputs (``None``: do not predict there — with ``fx_train_0=None`` the test
        predictions are those for ``f_0(X) = 0``, as in neural-tangents; ``0.`` for the
        mean over initialisations of a centred network); ``k_test_train``: ``Θ(X_test, X)``, needed with
        ``fx_test_0``. Returns ``fx_train_t``, ``fx_test_t``, or both as a tuple
        (train first) — with the shape of ``t`` in front. At ``t = None`` the training
        predictions are ``y_train`` (as in neural-tangents, also with ``diag_reg``).

    Notes
    -----
    With ``Θ = V diag(λ) Vᵀ`` and ``r = f_0(X) − y``:
    ``f_t(X) = f_0(X) + V diag(e^{-ηtλ/N} − 1) Vᵀ r`` and
    ``f_t(x) = f_0(x) + Θ(x, X) V diag((e^{-ηtλ/N} − 1)/λ) Vᵀ r``, with
    ``(e^{-ηtλ/N} − 1)/λ → −ηt/N`` at ``λ = 0`` (where neural-tangents divides 0
    by 0); negative eigenvalues (rounding) are set to 0 [Lee et al. 2019, Eq. (11)].
    With ``discrete=True``, ``e^{-ηtλ/N}`` becomes ``(1 − ηλ/N)^t``.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorprog import nn
    >>> X = np.array([[1.0, 0.0], [0.6, 0.8]]); y = np.array([1.0, -1.0])
    >>> ntk = nn.kernels(X, depth=1)[1]
    >>> predict = nn.predict.gradient_descent_mse(ntk, y)
    >>> np.allclose(predict(t=1e6), y), np.allclose(predict(None), y)
    (True, True)
    >>> x_test = np.array([[0.8, 0.6]])
    >>> k_test = nn.kernels(x_test, X, depth=1)[1]
    >>> fx_train, fx_test = predict(None, 0.0, 0.0, k_test)   # kernel regression at t = ∞
    >>> np.allclose(fx_test, k_test @ np.linalg.solve(ntk, y))
    True
    >>> K = np.array([[2.0, 0.5], [0.5, 1.0]])
    >>> f1 = nn.predict.gradient_descent_mse(K, y, learning_rate=0.5, discrete=True)(1)
    >>> np.allclose(f1, 0.0 - 0.5 / 2 * K @ (0.0 - y))   # one step by hand
    True
    """
    if not isinstance(discrete, (bool, np.bool_)):
        raise ProgramTypeError(f"gradient_descent_mse: discrete must be a bool, got {discrete!r}")
    return _Predictor(
        "gradient_descent_mse",
        k_train_train,
        y_train,
        learning_rate,
        diag_reg,
        diag_reg_absolute_scale,
        _steps if discrete else _flow,
    ).predict_fn


# ---------------------------------------------------------------------------------------
# The spectral functions: (g(λ, t), g(λ, t)/λ) for the eigenvalues λ ≥ 0 of Θ/N·η


def _flow(a: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``e^{-at} − 1`` and ``(e^{-at} − 1)/a`` (``→ −t`` at ``a = 0``); ``a = ηλ/N``."""
    g = np.expm1(-a * t)
    safe = np.where(a > 0, a, 1.0)
    return g, np.where(a > 0, g / safe, -t + 0 * a)


def _steps(a: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(1 − a)^t − 1`` and its quotient by ``a`` (``→ −t`` at ``a = 0``)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.where(
            a < 1, np.expm1(t * np.log1p(-np.minimum(a, 1.0 - 1e-300))), (1.0 - a) ** t - 1.0
        )
    safe = np.where(a > 0, a, 1.0)
    return g, np.where(a > 0, g / safe, -t + 0 * a)


class _Predictor:
    """Validated kernel and targets, the eigendecomposition (on first use) and the
    ``predict_fn`` of both predictors."""

    def __init__(
        self,
        where: str,
        K: Any,
        y: Any,
        lr: Any,
        diag_reg: Any,
        absolute: Any,
        spectral: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    ) -> None:
        self.where = where
        K = _array(K, "k_train_train", where)
        if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] == 0:
            raise ProgramValueError(
                f"{where}: k_train_train must be a non-empty square (B, B) matrix, got shape {K.shape}"
            )
        if not np.allclose(K, K.T, rtol=1e-10, atol=1e-12 * np.abs(K).max()):
            raise ProgramValueError(f"{where}: k_train_train must be symmetric")
        B = K.shape[0]
        y = _array(y, "y_train", where)
        if y.ndim not in (1, 2) or y.shape[0] != B:
            raise ProgramValueError(
                f"{where}: y_train must have shape (B,) or (B, k) with B = {B} (the size of "
                f"k_train_train), got shape {y.shape}"
            )
        self.lr = _number(lr, "learning_rate", where, positive=True)
        reg = _number(diag_reg, "diag_reg", where)
        if not isinstance(absolute, (bool, np.bool_)):
            raise ProgramTypeError(
                f"{where}: diag_reg_absolute_scale must be a bool, got {absolute!r}"
            )
        scale = 1.0 if absolute else float(np.trace(K)) / B
        self.K = (K + K.T) / 2 + reg * scale * np.eye(B)
        self.y, self.N = y, y.size
        self.spectral = spectral
        self._eig: tuple[np.ndarray, np.ndarray] | None = None
        self._cho: Any = None

    # -- pieces computed once ------------------------------------------------------------

    def eig(self) -> tuple[np.ndarray, np.ndarray]:
        if self._eig is None:
            lam, V = np.linalg.eigh(self.K)
            self._eig = (np.maximum(lam, 0.0), V)
        return self._eig

    def solve(self, r: np.ndarray) -> np.ndarray:
        if self._cho is None:
            try:
                self._cho = scipy.linalg.cho_factor(self.K)
            except np.linalg.LinAlgError:
                raise ProgramValueError(
                    f"{self.where}: k_train_train is not positive definite, so t = None (∞) "
                    f"has no unique solution; pass diag_reg > 0 or a finite t"
                ) from None
        return scipy.linalg.cho_solve(self._cho, r)

    # -- the returned function -----------------------------------------------------------

    def predict_fn(
        self,
        t: Any = None,
        fx_train_0: Any = 0.0,
        fx_test_0: Any = None,
        k_test_train: Any = None,
    ) -> Any:
        """Predictions at time(s) ``t`` (see the predictor's docstring)."""
        where = f"{self.where}: predict_fn"
        if fx_train_0 is None and fx_test_0 is None:
            raise ProgramValueError(
                f"{where}: fx_train_0 and fx_test_0 are both None, so nothing is predicted"
            )
        f0 = None if fx_train_0 is None else self._outputs(fx_train_0, self.y.shape, "fx_train_0")
        g0 = Kx = None
        if fx_test_0 is not None:
            if k_test_train is None:
                raise ProgramValueError(
                    f"{where}: predictions on the test set (fx_test_0) need k_test_train, "
                    f"the (B_test, B) kernel between test and training inputs"
                )
            Kx = _array(k_test_train, "k_test_train", where)
            if Kx.ndim != 2 or Kx.shape[1] != self.K.shape[0]:
                raise ProgramValueError(
                    f"{where}: k_test_train must have shape (B_test, {self.K.shape[0]}), got "
                    f"shape {Kx.shape}"
                )
            g0 = self._outputs(fx_test_0, (Kx.shape[0],) + self.y.shape[1:], "fx_test_0")
        r = (0.0 if f0 is None else f0) - self.y  # f_0(X) − y
        if t is None:
            self._check_converges(where)
            train = None if f0 is None else self.y.copy()
            test = None if g0 is None else g0 - Kx @ self.solve(r)
        else:
            ts = _times(t, where, integer=self.spectral is _steps)
            lam, V = self.eig()
            a = self.lr * lam / self.N
            g, q = self.spectral(a[None, :], ts.reshape(-1, 1))  # (T, B)
            c = V.T @ r.reshape(self.K.shape[0], -1)  # (B, k)
            train = test = None
            if f0 is not None:
                d = np.einsum("ib,tb,bk->tik", V, g, c)
                train = (f0.reshape(f0.shape[0], -1)[None] + d).reshape(ts.shape + self.y.shape)
            if g0 is not None:
                d = np.einsum("jb,tb,bk->tjk", Kx @ V, q * self.lr / self.N, c)
                test = (g0.reshape(g0.shape[0], -1)[None] + d).reshape(ts.shape + g0.shape)
        if train is not None and test is not None:
            return train, test
        return train if test is None else test

    def _check_converges(self, where: str) -> None:
        if self.spectral is _steps:
            lam, _ = self.eig()
            a = self.lr * lam.max() / self.N
            if a >= 2:
                raise ProgramValueError(
                    f"{where}: gradient descent diverges (learning_rate·λ_max/N = {a:.4g} ≥ 2), "
                    f"so t = None (∞) has no limit; take learning_rate < "
                    f"{2 * self.N / lam.max():.4g} or a finite t"
                )

    def _outputs(self, f: Any, shape: tuple[int, ...], arg: str) -> np.ndarray:
        a = _array(f, arg, f"{self.where}: predict_fn")
        try:
            return np.broadcast_to(a, shape).astype(float)
        except ValueError:
            raise ProgramValueError(
                f"{self.where}: predict_fn: {arg} must be a number or an array of shape "
                f"{shape}, got shape {a.shape}"
            ) from None


def _array(x: Any, arg: str, where: str) -> np.ndarray:
    try:
        a = np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - any failure means "not an array"
        raise ProgramTypeError(f"{where}: {arg} must be an array of real numbers ({exc})") from None
    if (
        a.dtype == object
        or np.iscomplexobj(a)
        or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool)
    ):
        raise ProgramTypeError(
            f"{where}: {arg} must be an array of real numbers, got dtype {a.dtype}"
        )
    a = a.astype(float)
    if not np.all(np.isfinite(a)):
        raise ProgramValueError(f"{where}: {arg} must be finite; it has NaN or inf entries")
    return a


def _number(x: Any, arg: str, where: str, positive: bool = False) -> float:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise ProgramTypeError(f"{where}: {arg} must be a real number, got {x!r}")
    f = float(x)
    if not math.isfinite(f) or f < 0 or (positive and f == 0):
        raise ProgramValueError(
            f"{where}: {arg} must be a finite number {'>' if positive else '≥'} 0, got {f}"
        )
    return f


def _times(t: Any, where: str, integer: bool) -> np.ndarray:
    ts = _array(np.where(np.isposinf(t), 0.0, t), "t", where)  # t = ∞ is allowed
    ts = np.where(np.isposinf(t), np.inf, ts)
    if np.any(ts < 0):
        raise ProgramValueError(f"{where}: t must be ≥ 0 (or None for t = ∞), got {t!r}")
    if integer and np.any(ts != np.round(ts)):
        raise ProgramValueError(
            f"{where}: t counts gradient-descent steps and must be whole numbers, got {t!r} "
            f"(with discrete=True; discrete=False is the continuous-time predictor)"
        )
    return ts
