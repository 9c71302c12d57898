"""Short judge and meta-judge templates for the sandbox model's 512-token context (Meta-Rewarding CPU demo).

Their own module so that ``config.sandbox_config`` can use them without importing ``sandbox.py`` (which imports
``config`` and ``loop``): no import cycle inside judges/meta_rewarding.
"""

from __future__ import annotations

__all__ = ["SANDBOX_JUDGE_TEMPLATE", "SANDBOX_META_TEMPLATE"]

SANDBOX_JUDGE_TEMPLATE = (
    "Score the answer from 0 to 5: +1 final line, +1 steps shown, +1 steps right, +2 answer right.\n"
    "Question: {{ question }}\nAnswer: {{ response }}\nEnd with the line Score: N"
)
"""A short additive rubric that fits the sandbox model's 512-token context (the paper's is ~760 tokens here)."""

SANDBOX_META_TEMPLATE = (
    "Which judgement scores the answer more accurately?\nQuestion: {{ question }}\nAnswer: {{ response }}\n"
    "Judgement A: {{ judgement_a }}\nJudgement B: {{ judgement_b }}\nFinish with the line Winner: Judgement X, "
    "X = A or B"
)
