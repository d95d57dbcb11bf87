"""Every closed-form pair/mean through the engine (auto: exact where registered, quadrature
otherwise) and nn.kernels(method="exact"), as repr strings to compare two commits bit for bit:

    PYTHONPATH=. python benchmarks/exact_values.py before.json   # at one commit
    PYTHONPATH=. python benchmarks/exact_values.py after.json    # at another; cmp the files
"""

import json
import sys

import numpy as np

import tensorprog as tp
from tensorprog import nn

p = tp.Program("cf")
xs = p.vectors("x", cov=np.array([[1.3, 0.4], [0.4, 0.7]]))
W = p.matrix("W", var=1.7)
h = [W @ x for x in xs]
derf = tp.erf.derivative()
fns = {
    "identity": tp.identity,
    "relu": tp.relu,
    "step": tp.step,
    "sign": tp.sign,
    "abs": tp.abs,
    "erf": tp.erf,
    "derf": derf,
    "sin": tp.sin,
    "cos": tp.cos,
    "exp": tp.exp,
}
acts = {nm: [f(hh) for hh in h] for nm, f in fns.items()}
names = list(fns)
for a in names:
    tp.mean(acts[a][0], name=f"m_{a}")
    for b in names:
        tp.inner(acts[a][0], acts[b][1], name=f"{a}_{b}")
lim = p.limit()
out = {k: (repr(v), lim.method(k)) for k, v in lim.values.items()}
X = np.array([[1.0, 0.3], [-0.2, 0.9], [0.5, -1.1]])
for act in ("relu", "erf"):
    K = nn.kernels(X, 2, act, 1.5, 0.1, method="exact")
    for k, v in enumerate(K):
        out[f"nn_{act}_{k}"] = (repr(np.asarray(v, float).tolist()), "exact")
json.dump(out, open(sys.argv[1], "w"), indent=0, sort_keys=True)
print(len(out), sum(m == "exact" for _, m in out.values()))
