"""nn.layernorm / nn.rmsnorm: finite width against numpy, limits against closed forms,
gradients through the statistics against numpy finite differences."""

import numpy as np
import pytest

import tensorprog as tp
from tensorprog import nn


def _ln(x, eps):
    c = x - x.mean()
    return c / np.sqrt(np.mean(c * c) + eps)


def _rms(x, eps):
    return x / np.sqrt(np.mean(x * x) + eps)


def test_finite_width_is_numpy():
    p = tp.Program()
    h, u = p.vector("h", var=4.0), p.vector("u")
    y = nn.layernorm(h + 0.5, name="y")
    z = nn.rmsnorm(h * u + 1, eps=0.1, name="z")
    S = tp.simulate(p, n=513, seed=3)
    np.testing.assert_allclose(S[y], _ln(S[h] + 0.5, 1e-5), rtol=0, atol=1e-13)
    np.testing.assert_allclose(S[z], _rms(S[h] * S[u] + 1, 0.1), rtol=0, atol=1e-13)


def test_limits_are_closed_forms():
    # h ~ N(0, 4): LN(h + 1/2) = h/√(4 + ε); RMS(h + 1/2) = (h + 1/2)/√(4.25 + ε).
    p = tp.Program()
    h = p.vector("h", var=4.0)
    y = nn.layernorm(h + 0.5)
    z = nn.rmsnorm(h + 0.5, eps=0.01)
    a, b = tp.inner(y, h), tp.mean(z)
    L = p.limit()
    assert float(L[a]) == pytest.approx(4 / np.sqrt(4 + 1e-5), rel=1e-12)
    assert float(L[b]) == pytest.approx(0.5 / np.sqrt(4.26), rel=1e-12)


def test_gradient_through_the_statistics():
    # f = ⟨LN(h), u⟩; n ∂f/∂h by tp.grad(through_scalars=True) vs numpy central differences.
    p = tp.Program()
    h, u = p.vector("h", var=2.0), p.vector("u")
    f = tp.inner(nn.layernorm(h, eps=0.3), u)
    dh = tp.grad(f, h, through_scalars=True)
    n = 64
    S = tp.simulate(p, n=n, seed=1)
    x, w = S[h], S[u]
    fd = np.empty(n)
    for a in range(n):
        e = np.zeros(n)
        e[a] = 1e-6
        fd[a] = (np.mean(_ln(x + e, 0.3) * w) - np.mean(_ln(x - e, 0.3) * w)) / 2e-6
    np.testing.assert_allclose(S[dh], n * fd, rtol=0, atol=1e-7)


@pytest.mark.parametrize("fn", [nn.layernorm, nn.rmsnorm])
def test_bad_input_is_named(fn):
    p = tp.Program()
    h = p.vector("h")
    with pytest.raises(tp.ProgramValueError, match="eps"):
        fn(h, eps=-1.0)
    with pytest.raises(tp.ProgramTypeError, match="vector"):
        fn(tp.mean(h))
