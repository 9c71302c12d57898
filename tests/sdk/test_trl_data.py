"""Loop outputs as datasets.Dataset in TRL's formats (issue 17 item 17): the rows TRL's own format checks
recognise, loopwright's SFT rows converted to prompt-completion, and clear errors for wrong rows."""

from __future__ import annotations

import pytest
from trl.data_utils import is_conversational

from loopwright.sdk.artifacts import write_jsonl
from loopwright.sdk.trl_data import to_dataset

CHAT = [{"role": "user", "content": "What is 2 + 3?"}]


def test_preference_rows_pass_through_and_extras_are_dropped(tmp_path):
    rows = [{"prompt": CHAT, "chosen": [{"role": "assistant", "content": "5"}],
             "rejected": [{"role": "assistant", "content": "6"}], "kind": "actor", "score": {"a": 1}}] * 3
    write_jsonl(tmp_path / "pairs.jsonl", rows)
    ds = to_dataset(tmp_path / "pairs.jsonl")
    assert ds.column_names == ["prompt", "chosen", "rejected"] and len(ds) == 3
    assert is_conversational(ds[0]) and ds[0]["chosen"][0]["content"] == "5"
    assert to_dataset(rows, keep_extra=True).column_names == ["prompt", "chosen", "rejected", "kind", "score"]


def test_loopwright_sft_rows_become_prompt_completion():
    ds = to_dataset([{"prompt": "2+3=", "target": "5"}])
    assert ds[0] == {"prompt": "2+3=", "completion": "5"} and not is_conversational(ds[0])
    chat = to_dataset([{"prompt": CHAT, "target": "5"}], "sft")[0]
    assert chat["completion"] == [{"role": "assistant", "content": "5"}] and is_conversational(chat)
    msgs = [*CHAT, {"role": "assistant", "content": "5"}]
    assert to_dataset([{"messages": msgs}])[0] == {"messages": msgs}


def test_wrong_rows_name_the_row_and_columns(tmp_path):
    with pytest.raises(ValueError, match=r"row 1 has no rejected \(columns: \['chosen', 'prompt'\]\)"):
        to_dataset([{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a"}])
    with pytest.raises(ValueError, match="neither a preference row"):
        to_dataset([{"question": "q"}])
    with pytest.raises(ValueError, match="no rows"):
        to_dataset([])
    with pytest.raises(FileNotFoundError, match="no JSONL file"):
        to_dataset(tmp_path / "missing.jsonl")
