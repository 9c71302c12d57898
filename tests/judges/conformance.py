"""Backend-agnostic conformance checks every ``Judge`` must pass (LLM judges, reward-model judges, ...).

Each check is a plain function ``check_xxx(judge) -> None`` that asserts; checks for a kind the judge does not
list in ``judge.kinds`` return at once. A judge's test file runs them all. tests/sdk/conformance.py has the same
module name and tests/ has no ``__init__.py``, so ``import conformance`` would pick whichever was imported first;
tests/judges/conftest.py registers this file as ``judge_conformance``::

    from judge_conformance import JUDGE_CONFORMANCE_CHECKS

    @pytest.mark.parametrize("check", JUDGE_CONFORMANCE_CHECKS, ids=lambda f: f.__name__)
    def test_conformance(judge, check):
        check(judge)

The checks hold for any model, including a random or scripted one: they test shapes, provenance and the
invalid-verdict contract, never whether a verdict is right.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import pytest

from loopwright.sdk.judge import Judge
from loopwright.sdk.types import JudgeProvenance, Verdict

PROMPTS = [
    "Tom has 12 pens. He buys 7 more. How many pens does he have now?",
    [{"role": "user", "content": "A farmer had 45 sheep and sold 18 of them. How many sheep are left?"}],
    "Each box holds 6 apples. How many apples are in 9 boxes?",
]
GOOD = ["12 + 7 = 19. He has 19 pens. #### 19", "45 - 18 = 27. #### 27", "6 * 9 = 54. #### 54"]
BAD = ["12 - 7 = 5. #### 5", "45 + 18 = 63. #### 63", "6 + 9 = 15. #### 15"]


def _assert_verdict(v: Verdict, kind: str) -> None:
    assert isinstance(v, Verdict), f"expected a Verdict, got {type(v).__name__}"
    assert v.kind == kind, f"expected kind {kind!r}, got {v.kind!r}"
    assert isinstance(v.judge, JudgeProvenance), "every Verdict must carry provenance (Verdict.judge)"
    assert v.judge.model, "provenance must name the model"
    assert isinstance(v.raw, str)
    if v.valid:
        assert v.invalid_reason is None, f"a valid verdict carries invalid_reason {v.invalid_reason!r}"
        if kind == "pointwise":
            assert v.score is not None and math.isfinite(v.score), v.score
        if kind == "pairwise":
            assert v.preference in ("A", "B", "tie"), v.preference
            assert v.p_a is None or 0.0 <= v.p_a <= 1.0, v.p_a
    else:
        assert v.invalid_reason, "an invalid verdict must say why"
        assert v.score is None, f"an invalid verdict must carry no score, got {v.score}"
        assert v.preference is None, f"an invalid verdict must carry no preference, got {v.preference}"
        assert v.p_a is None, f"an invalid verdict must carry no soft preference, got {v.p_a}"
    assert v.usage.prompt_tokens >= 0 and v.usage.completion_tokens >= 0


# ------------------------------------------------------------------------------------------------ checks


def check_declares_kinds(judge: Judge) -> None:
    assert judge.kinds, f"{type(judge).__name__}.kinds is empty"
    assert judge.kinds <= {"pointwise", "pairwise", "rank", "binary"}, judge.kinds
    assert isinstance(judge.name, str) and judge.name


def check_pointwise_shapes_and_provenance(judge: Judge) -> None:
    if "pointwise" not in judge.kinds:
        return
    out = judge.score(PROMPTS + PROMPTS, GOOD + BAD)
    assert isinstance(out, list) and len(out) == 2 * len(PROMPTS), f"expected {2 * len(PROMPTS)} verdicts"
    for v in out:
        _assert_verdict(v, "pointwise")


def check_pointwise_empty(judge: Judge) -> None:
    if "pointwise" not in judge.kinds:
        return
    assert judge.score([], []) == []


def check_pointwise_length_mismatch_raises(judge: Judge) -> None:
    if "pointwise" not in judge.kinds:
        return
    with pytest.raises(ValueError):
        judge.score(PROMPTS, GOOD[:1])


def check_pointwise_deterministic(judge: Judge) -> None:
    """Same inputs, same verdicts (greedy LLM judges, reward models): the unit of reproducibility."""
    if "pointwise" not in judge.kinds:
        return
    sampling = getattr(judge, "sampling", None)
    if sampling is not None and not sampling.deterministic:
        return
    a = judge.score(PROMPTS, GOOD)
    b = judge.score(PROMPTS, GOOD)
    assert [v.valid for v in a] == [v.valid for v in b]
    for x, y in zip(a, b, strict=True):
        assert (x.score is None) == (y.score is None)
        if x.score is not None:
            assert abs(x.score - y.score) < 1e-4, (x.score, y.score)


def check_pairwise_shapes_and_provenance(judge: Judge) -> None:
    if "pairwise" not in judge.kinds:
        return
    out = judge.compare(PROMPTS, GOOD, BAD)
    assert isinstance(out, list) and len(out) == len(PROMPTS)
    for v in out:
        _assert_verdict(v, "pairwise")


def check_pairwise_empty(judge: Judge) -> None:
    if "pairwise" not in judge.kinds:
        return
    assert judge.compare([], [], []) == []


def check_pairwise_length_mismatch_raises(judge: Judge) -> None:
    if "pairwise" not in judge.kinds:
        return
    with pytest.raises(ValueError):
        judge.compare(PROMPTS, GOOD, BAD[:2])


def check_pairwise_both_order_protocol(judge: Judge) -> None:
    """A judge that judges both orders records them; ``consistent`` is their agreement, when both parsed."""
    if "pairwise" not in judge.kinds:
        return
    out = judge.compare(PROMPTS, GOOD, BAD)
    both = getattr(judge, "both_orders", False)
    for v in out:
        if not both:
            continue
        assert v.swap is not None, "a both-orders judge must record the SwapRecord"
        f, r = v.swap.forward, v.swap.reverse
        if f is not None and r is not None:
            assert v.swap.consistent == (f == r), v.swap
            if v.valid and v.swap.consistent:
                assert v.preference == f, (v.preference, v.swap)
        else:
            assert v.swap.consistent is None, v.swap
        if f is None and r is None:
            assert not v.valid, "a verdict with neither order parsed cannot be valid"


def check_pairwise_swap_symmetry(judge: Judge) -> None:
    """Swapping A and B of a both-orders judge mirrors every consistent verdict (A <-> B)."""
    if "pairwise" not in judge.kinds or not getattr(judge, "both_orders", False):
        return
    sampling = getattr(judge, "sampling", None)
    if sampling is not None and not sampling.deterministic:
        return
    ab = judge.compare(PROMPTS, GOOD, BAD)
    ba = judge.compare(PROMPTS, BAD, GOOD)
    mirror = {"A": "B", "B": "A", "tie": "tie", None: None}
    for x, y in zip(ab, ba, strict=True):
        if x.valid and y.valid and x.swap and x.swap.consistent:
            assert y.preference == mirror[x.preference], (x.preference, y.preference)


def check_async_equals_sync(judge: Judge) -> None:
    """``ascore`` / ``acompare`` give the Verdicts of ``score`` / ``compare`` (deterministic judges), and an empty
    batch is an empty list on both paths."""
    sampling = getattr(judge, "sampling", None)
    if sampling is not None and not sampling.deterministic:
        return

    def same(a: list[Verdict], b: list[Verdict]) -> None:
        assert [v.valid for v in a] == [v.valid for v in b]
        for x, y in zip(a, b, strict=True):
            assert x.kind == y.kind and x.preference == y.preference and x.invalid_reason == y.invalid_reason
            assert (x.score is None) == (y.score is None)
            if x.score is not None:
                assert abs(x.score - y.score) < 1e-4, (x.score, y.score)

    if "pointwise" in judge.kinds:
        same(asyncio.run(judge.ascore(PROMPTS, GOOD)), judge.score(PROMPTS, GOOD))
        assert asyncio.run(judge.ascore([], [])) == []
    if "pairwise" in judge.kinds:
        same(asyncio.run(judge.acompare(PROMPTS, GOOD, BAD)), judge.compare(PROMPTS, GOOD, BAD))
        assert asyncio.run(judge.acompare([], [], [])) == []


JUDGE_CONFORMANCE_CHECKS: list[Callable[[Judge], None]] = [
    check_declares_kinds,
    check_pointwise_shapes_and_provenance,
    check_pointwise_empty,
    check_pointwise_length_mismatch_raises,
    check_pointwise_deterministic,
    check_pairwise_shapes_and_provenance,
    check_pairwise_empty,
    check_pairwise_length_mismatch_raises,
    check_pairwise_both_order_protocol,
    check_pairwise_swap_symmetry,
    check_async_equals_sync,
]
