"""examples/reverse_training.py: the symbolic reversal task's data (spec/modeling.md §4.3); the reproduction runs small."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

from loopwright.modeling.reverse import reverse_token_row

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "reverse_training.py"


def _example():
    spec = importlib.util.spec_from_file_location("reverse_training_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_statements_and_their_entity_preserving_reversal():
    ex = _example()
    pairs = ex.make_pairs(random.Random(0), n_pairs=50, entity_len=3, n_names=100)
    entities = [tuple(e) for pair in pairs for e in pair]
    assert len(set(entities)) == 100 and all(len(e) == 3 for e in entities)
    a, b = pairs[0]
    ids, spans = ex.forward_statement(a, b)
    assert [ids[s:e] for s, e in spans] == [a, b]
    rev_ids, spans_r = ex.reverse_statement(a, b)
    assert [rev_ids[s:e] for s, e in spans_r] == [b, a]
    twin, _ = reverse_token_row(ids, "entity", entity_spans=spans, bos_id=ex.BOS, eos_id=ex.EOS)
    assert twin == [ex.BOS, *b, ex.FEATURE, ex.A, ex.HAS, *a, ex.EOS]  # "b feature a has a"
    word_twin, _ = reverse_token_row(ids, "word", bos_id=ex.BOS, eos_id=ex.EOS)
    assert word_twin[-4:-1] == a[::-1]  # word reversal flips the multi-token entity


@pytest.mark.slow
def test_reversal_reproduction_runs_small():
    summary = _example().main(["--steps", "30", "--pairs", "40", "--hidden", "32", "--layers", "2",
                               "--eval-every", "15", "--arms", "standard,entity,rand", "--jobs", "1"])
    assert set(summary["results"]) == {"standard", "entity", "rand"}
    for arm, result in summary["results"].items():
        assert 0.0 <= result["acc_reverse_unseen"] <= 1.0, arm
        assert result["final_loss"] < 4.7, (arm, result)  # below the uniform guess ln(109) = 4.69 + margin
