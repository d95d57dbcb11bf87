"""Monte Carlo over the limit: sample every base Gaussian, evaluate every ``Z``.

One pass walks the program in order with every vector an array of shape ``(K, M)``:
``M`` samples of its ``Z`` in each of ``K`` independent replicates — ``K`` "width-M"
runs of the *limit*, with no matrices, sharing one walk (the interpreter's overhead is
paid once per pass, not once per replicate):

* the samples of every base Gaussian are standard normals drawn up front, one row
  per base Gaussian: by default randomised quasi-Monte Carlo points (an independently
  scrambled Sobol' sequence per replicate, :mod:`..qmc`), else iid;
* initial vectors: the joint law's factor times their rows;
* MatMul ``Wx``: ``Ẑ^{Wx}`` is drawn conditionally on the earlier hats of its family
  (incremental, rank-tolerant Cholesky of ``σ_W² 𝔼[Z^x Z^{x'}]``, one factor per
  replicate), then ``Z = Ẑ + Σ_i c_i Z^{y^i}`` with ``c = σ_W² 𝔼[∂Z^x/∂Ẑ_S]`` from the
  Stein/regression form ``Cov(Ẑ_S)⁻¹ 𝔼[Ẑ_S Z^x]`` (a least-squares fit of ``Z^x`` on the
  hats it depends on) [TP4 Remark F.2], [TP3 Remark 2.12] — valid for relu and step;
* Moments are sample means; a Moment ``𝔼[Z^a Z^b]`` and the hat covariance of the same
  two vectors are one estimate.

Vectors that are read together live as rows of *stacks* (:class:`_Schedule`), so that
hats, Ż terms and linear updates are batched matrix products, one per instruction.

Every estimate (a Moment, a hat second moment, a regression coefficient) is taken per
replicate, an array of shape ``(K, 1)`` that broadcasts against the samples; quantities
the deterministic pass already knows exactly are used as constants. The value of a
scalar is the mean of its replicate estimates and the standard error their spread over
``√K``, which accounts for every source of noise (estimated covariances, regressions,
propagated moments).

Memory: a pass holds as many replicates as fit in ``max_memory``; a replicate that does
not fit on its own runs in pieces of samples (a power of two), in sweeps (see
:class:`MonteCarloPass`). Replicate ``r`` draws its normals from its own stream in the
same order however the replicates are grouped into passes, and its estimates never mix
with another replicate's, so the result is the same bits for every grouping (it
depends on ``max_memory`` only through the pieces of a replicate too large to fit).
Passes run concurrently, one thread per core (numpy releases the GIL inside its
kernels; the interpreter's share, about 10 ms a pass for 900 instructions, does not
overlap), with the BLAS library's threads limited to the cores left per pass
(:func:`~tensorprog.core._resources.blas_threads`) — or, with ``executor=``, as tasks
of any ``concurrent.futures.Executor`` (a Dask cluster, a process pool), with the same
bits (:mod:`.distributed`). The default ``max_memory`` is a share of what the process
may allocate (:func:`~tensorprog.core._resources.montecarlo_memory`).

The package reads by idea: :mod:`.rules` (one method per instruction class),
:mod:`.schedule` (stacks, families, pairs, tilts, last uses), :mod:`.linalg` (batched
linear algebra), :mod:`.estimates` (estimate keys and running sums), :mod:`.passes`
(the walk under the rules), :mod:`.sources` (normals), :mod:`.chunks` (the unit of
work: whole replicates, and their sufficient statistics), :mod:`.distributed` (chunks
on an executor: what travels, retries) and :mod:`.run` (chunks, threads, memory, seeds,
progress, the reduction over replicates and tails).
"""

from __future__ import annotations

# (what was importable from the single module: tests and docs reach some private names)
from .estimates import DotKey as DotKey
from .estimates import MomentKey as MomentKey
from .estimates import PairKey as PairKey
from .linalg import _factor_row as _factor_row
from .linalg import _regression as _regression
from .rules import MonteCarloPass
from .run import TAIL_DRAWS as TAIL_DRAWS
from .run import run_montecarlo
from .schedule import _Schedule as _Schedule

__all__ = ["MonteCarloPass", "run_montecarlo"]
