"""Loops composed from the public stages (:mod:`loopwright.sdk.loop_stages`, :mod:`loopwright.trainers.loop_stages`).

Each is a short function returning a :class:`~loopwright.sdk.loop.Loop`; read it to see the composition, copy it
to make your own:

- :func:`self_rewarding_loop` -- Self-Rewarding (Yuan et al. 2024, arXiv 2401.10020): the model judges its own
  samples, best vs worst go to DPO;
- :func:`star_loop` -- iterative rejection-sampling SFT (STaR, arXiv 2203.14465 / ReST-EM, arXiv 2312.06585);
- :func:`online_dpo_loop` -- online iterative DPO against an external reward model (RLAIF).
"""

from __future__ import annotations

from .online_dpo import online_dpo_loop
from .self_rewarding import self_rewarding_loop
from .star import star_loop

__all__ = ["online_dpo_loop", "self_rewarding_loop", "star_loop"]
