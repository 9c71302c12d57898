"""examples/mta_find_block.py: the toy-task generator follows the official semantics; the reproduction runs small.

Reference: facebookresearch/RAM projects/mta/toy_task/generate_data.py as described in spec/modeling.md §2.11.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mta_find_block.py"


def _example():
    spec = importlib.util.spec_from_file_location("mta_find_block_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_semantics():
    ex = _example()
    rng = random.Random(0)
    for _ in range(50):
        ids, mask = ex.make_sample(rng, n_blocks=8, block_len=5, query_len=2)
        assert ids[0] == ex.BOS and ids[-1] == ex.EOS
        hash_at = ids.index(ex.HASH)
        context, query, target = ids[1:hash_at], ids[hash_at + 1: hash_at + 3], ids[hash_at + 3: -1]
        assert len(target) == 5 and len(set(target)) == 5 and len(query) == 2 and set(query) <= set(target)
        blocks, cur = [], []
        for t in context + [ex.DOT]:
            if t == ex.DOT:
                blocks.append(tuple(cur))
                cur = []
            else:
                cur.append(t)
        assert len(blocks) == 8 and len(set(blocks)) == 8 and all(len(set(b)) == 5 for b in blocks)
        holders = [b for b in blocks if set(query) <= set(b)]
        assert holders == [tuple(target)]  # the target is the unique block with both query letters
        assert mask == [0] * (len(ids) - 6) + [1] * 6  # 5 letters + EOS
    assert ex.make_sample(random.Random(3), 8, 5, 2) == ex.make_sample(random.Random(3), 8, 5, 2)


@pytest.mark.slow
def test_find_block_reproduction_runs_small():
    summary = _example().main(["--steps", "20", "--n-blocks", "4", "--test-size", "32", "--eval-every", "10",
                               "--layers", "2", "--jobs", "1"])
    assert set(summary["results"]) == {"base", "mta"}
    for arm, result in summary["results"].items():
        assert 0.0 <= result["err_seq"] <= 1.0, arm
        assert result["final_loss"] < 3.3, (arm, result)  # below the uniform guess ln(32) = 3.47
