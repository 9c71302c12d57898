"""Judge-as-a-library adapters (spec/ecosystem.md §4.4): thin modules that expose a loopwright Judge in another
framework's contract. Each adapter imports its framework lazily (or not at all), so importing this package is cheap.

- :mod:`.trl` -- TRL 1.16 reward functions (sync/async), the OnlineDPO pairwise layout, and
  :class:`~.trl.RewardFuncMixin` (``judge.as_reward_func()``); imports nothing from TRL, so it is re-exported here.
- :mod:`.inspect` -- evaluation-harness adapter (inspect-ai scorer); import it directly, it is not re-exported.
"""

from .trl import RewardFuncMixin, as_pairwise_reward_func, as_reward_func

__all__ = ["RewardFuncMixin", "as_pairwise_reward_func", "as_reward_func"]
