"""examples/btx_mini.py end to end at a small scale (spec/modeling.md §5.5): every arm runs and the qualitative
facts that hold even after a few steps do hold (each expert beats the other on its own domain; the MoE finetune
improves the merged model). The full-size run and its table are in docs/btx.md."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "btx_mini.py"


@pytest.mark.slow
def test_btx_mini_small_scale():
    spec = importlib.util.spec_from_file_location("btx_mini", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.run(seed=0, scale=0.08, threads=1, log=None)
    rows = res["rows"]
    assert set(rows) >= {"seed", "expert_arith", "expert_code", "dense_continued", "average_dense (BTM merge)",
                         "btm_ensemble", "btx_merged_no_finetune", "btx (moe finetuned)", "btx without LB (alpha 0)",
                         "sparse upcycling (matched steps)"}
    assert all(math.isfinite(v) for r in rows.values() for v in r.values())
    assert rows["expert_arith"]["arith_loss"] < rows["expert_code"]["arith_loss"]
    assert rows["expert_code"]["code_loss"] < rows["expert_arith"]["code_loss"]
    assert rows["btx (moe finetuned)"]["mean_loss"] < rows["btx_merged_no_finetune"]["mean_loss"]
    for fracs in res["utilisation_after"].values():
        assert abs(sum(fracs) - 1.0) < 5e-3  # rounded to 3 decimals
    print(mod.table(res))
