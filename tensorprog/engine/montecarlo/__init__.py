"""Monte Carlo over the limit (moved to :mod:`.rules`; split by idea in the next commit)."""

from .rules import MonteCarloPass, run_montecarlo

__all__ = ["MonteCarloPass", "run_montecarlo"]
