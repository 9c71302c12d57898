"""Experiment tracking (issue 16 item 4): LOOPWRIGHT_REPORT_TO=tensorboard sends a TRL run's logs and the loop
iterations' metrics to TensorBoard event files inside the run folder; unset, nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from loopwright.sdk.artifacts import RunDir  # noqa: E402
from loopwright.sdk.report import append_iteration  # noqa: E402

ROWS = [{"messages": [{"role": "user", "content": f"What is {i} + 1?"},
                      {"role": "assistant", "content": f"{i}+1=<<{i}+1={i + 1}>>{i + 1}\n#### {i + 1}"}]}
        for i in range(8)]


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_training_run_and_loop_iterations_reach_one_tensorboard(tiny_model_dir, tmp_path, monkeypatch):
    from loopwright.trainers.sft import SFTSettings, sft_train

    monkeypatch.setenv("LOOPWRIGHT_REPORT_TO", "tensorboard")
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    run = RunDir(tmp_path / "run", config={"what": "tracking test"})
    res = sft_train(tiny_model_dir, ROWS, "iter_1/model", SFTSettings(max_steps=3, batch_size=4), run=run)
    assert res.manifest["trl_config"]["report_to"] == ["tensorboard"]
    train = scalars(run.path / "tensorboard" / "iter_1" / "model")
    assert [s for s, _ in train["train/loss"]] == [1, 2, 3]  # logged every step (max_steps // 10 -> 1)
    assert train["train/loss"][0][1] == pytest.approx(res.metrics["loss_history"][0], rel=1e-5)

    for t, acc in ((0, 0.25), (1, 0.5)):
        append_iteration(run.path, {"iteration": t, "metrics": {"accuracy": acc, "kept": 7 + t, "note": None}})
    loop = scalars(run.path / "tensorboard" / "loop")
    assert loop["loop/accuracy"] == [(0, 0.25), (1, 0.5)]
    assert loop["loop/kept"] == [(0, 7.0), (1, 8.0)]
    assert "loop/note" not in loop


def test_trl_config_report_to_wins_and_unset_writes_nothing(tiny_model_dir, tmp_path, monkeypatch):
    from loopwright.trainers.sft import SFTSettings, sft_train

    monkeypatch.setenv("LOOPWRIGHT_REPORT_TO", "tensorboard")
    res = sft_train(tiny_model_dir, ROWS, tmp_path / "a", SFTSettings(max_steps=1, batch_size=4),
                    trl_config={"report_to": "none"})
    assert res.manifest["trl_config"]["report_to"] == "none"
    assert not (tmp_path / "tensorboard").exists()

    monkeypatch.delenv("LOOPWRIGHT_REPORT_TO")
    sft_train(tiny_model_dir, ROWS, tmp_path / "b", SFTSettings(max_steps=1, batch_size=4))
    append_iteration(tmp_path, {"iteration": 0, "metrics": {"accuracy": 1.0}})
    assert not (tmp_path / "tensorboard").exists()
