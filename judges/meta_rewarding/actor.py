"""Actor preference pairs with Meta-Rewarding's length control ρ (spec/loops.md §3.3 [S]).

The rule itself is :func:`loopwright.sdk.pairs.select_pair` (shared with the public ``BuildPairs`` stage); this
module keeps its Meta-Rewarding name.
"""

from __future__ import annotations

from ...sdk.pairs import PairChoice, select_pair

__all__ = ["PairChoice", "select_actor_pair"]

select_actor_pair = select_pair
