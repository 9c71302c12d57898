"""Issue 16 item 3: the loops' ``peft`` option trains LoRA adapters inside an iteration (real TRL training, no mocks).

One short Rejection-SFT iteration on the sandbox seed model with ``peft=LoRASettings(r=4)`` must leave a normal,
merged transformers folder whose manifest says ``lora.format == "merged"``; only the targeted linear layers moved,
and each one moved by a matrix of rank <= 4 (a full fine-tune gives full-rank updates); embeddings, norms and the
output head are bit-identical to the seed. Meta-Rewarding's train stage passes ``dpo.peft`` to the DPO wrapper the
same way; the Self-Taught Evaluator hands ``peft`` to the trainer ``train_method`` picks. ``merge=False`` is refused
by every loop config, by recipes too, with one line naming the key and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file
from typer.testing import CliRunner

from loopwright.judges.meta_rewarding.config import DPOConfig, sandbox_config
from loopwright.judges.rejection_sft import RejectionSFTConfig, RejectionSFTLoop
from loopwright.judges.self_taught.loop import SelfTaughtConfig
from loopwright.sdk.cli import app
from loopwright.sdk.errors import ConfigError
from loopwright.sdk.recipes import load_recipe
from loopwright.trainers.dpo import DPOSettings
from loopwright.trainers.lora import LoRASettings
from loopwright.trainers.sft import SFTSettings

R = 4
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def seed_dir() -> Path:
    from loopwright.trainers.sandbox.seed import ensure_seed_model

    return ensure_seed_model(progress=False)


def _targeted(key: str) -> bool:
    return any(f".{t}." in key for t in TARGETS)


def _delta_ranks(seed: Path, trained: Path) -> dict[str, int]:
    """Numerical rank of trained - seed for every tensor that changed (2-D: SVD; else 0 marks "changed")."""
    before, after = load_file(seed / "model.safetensors"), load_file(trained / "model.safetensors")
    assert set(after) == set(before) and not any("lora" in k for k in after)
    ranks = {}
    for k, w in before.items():
        if torch.equal(w, after[k]):
            continue
        d = (after[k] - w).double()
        # fp32 rounding of the merge (W + BA) adds ~1e-7 * |W| noise of full rank; the update's singular values
        # are orders of magnitude above it, so count those above 1e-4 of the largest
        ranks[k] = int(torch.linalg.matrix_rank(d, rtol=1e-4)) if d.ndim == 2 else 0
    return ranks


def _check_merged(folder: Path, seed: Path) -> dict:
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names and "adapter_config.json" not in names
    m = json.loads((folder / "loopwright_manifest.json").read_text())
    assert m["lora"]["format"] == "merged" and m["settings"]["lora"]["r"] == R
    ranks = _delta_ranks(seed, folder)
    before = load_file(seed / "model.safetensors")
    assert set(ranks) == {k for k in before if _targeted(k)}, sorted(ranks)  # embeddings, norms, lm_head untouched
    assert any("embed_tokens" in k for k in before) and any("norm" in k for k in before) and "lm_head.weight" in before
    assert all(1 <= r <= R for r in ranks.values()), ranks
    # the bound is not trivially true: the seed's own matrices are far above rank R
    assert min(int(torch.linalg.matrix_rank(before[k])) for k in ranks) > 8 * R
    return m


@pytest.mark.timeout(600)
def test_rejection_sft_iteration_with_peft_trains_low_rank_merged_updates(seed_dir, tmp_path):
    from loopwright.judges.oracle import GoldAnswerJudge
    from loopwright.trainers.sandbox.seed import evaluate_accuracy, held_out_problems, miniarith_prompt

    problems = held_out_problems(4 + 16)
    eval_set, train_set = problems[:4], problems[4:]

    def evaluate(gen):
        r = evaluate_accuracy(gen, eval_set, max_tokens=64)
        return int(r["correct"]), int(r["n"])

    cfg = RejectionSFTConfig(iterations=1, samples=4, temperature=1.0, max_tokens=80, eval_max_tokens=64,
                             batch_size=8, epochs=1.0, learning_rate=1e-2, peft=LoRASettings(r=R))
    loop = RejectionSFTLoop(seed_dir, [miniarith_prompt(p) for p in train_set], GoldAnswerJudge(train_set), evaluate,
                            cfg)
    records = loop.run(tmp_path / "run")
    assert [r["iteration"] for r in records] == [0, 1]
    model = tmp_path / "run" / "iter_1" / "model"
    m = _check_merged(model, seed_dir)
    assert m["kind"] == "sft" and 0 < m["lora"]["trainable_params"] < m["lora"]["all_params"] // 10
    run_cfg = json.loads((tmp_path / "run" / "manifest.json").read_text())["config"]
    assert run_cfg["peft"]["r"] == R  # recorded with the run


@pytest.mark.timeout(300)
def test_meta_rewarding_train_stage_passes_dpo_peft_to_the_trainer(seed_dir, tmp_path):
    from loopwright.judges.meta_rewarding.loop import MetaRewardingLoop

    cfg = sandbox_config(iterations=1, prompts_per_iter=1,
                         dpo={"max_steps": 3, "batch_size": 4, "max_length": 64, "learning_rate": 1e-2,
                              "peft": {"r": R}})
    loop = MetaRewardingLoop(cfg, tmp_path / "run", seed_model=seed_dir, prompts=["What is 2 plus 3?"])
    pairs = [{"prompt": [{"role": "user", "content": f"Tom has {i} pens and buys 7. How many?"}],
              "chosen": [{"role": "assistant", "content": f"{i}+7={i + 7} #### {i + 7}"}],
              "rejected": [{"role": "assistant", "content": f"{i}+7={i + 8} #### {i + 8}"}]} for i in range(8)]
    (tmp_path / "run" / "iter1").mkdir(parents=True)
    (tmp_path / "run" / "iter1" / "train_pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    out = loop.loop().run_stage(tmp_path / "run", "train", 1)
    assert out["train_steps"] == 3
    assert _check_merged(loop.model_dir(1), seed_dir)["kind"] == "dpo"


@pytest.mark.timeout(300)
def test_self_taught_train_stage_trains_peft_adapters(seed_dir, tmp_path):
    from loopwright.judges.self_taught.loop import SelfTaughtEvaluator

    cfg = SelfTaughtConfig(peft={"r": R}, sft=SFTSettings(max_steps=3, batch_size=4, max_length=64,
                                                          learning_rate=1e-2))
    loop = SelfTaughtEvaluator(seed_dir, cfg)
    run = tmp_path / "run"
    rows = [{"prompt": f"Which answer to {i}+3 is right? A: {i + 3} B: {i + 4}", "target": "[[A]]"} for i in range(8)]
    (run / "iter_1").mkdir(parents=True)
    (run / "iter_1" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = loop.loop().run_stage(run, "train", 1)
    assert out["train_loss"] > 0
    m = _check_merged(run / "iter_1" / "model", seed_dir)
    assert m["kind"] == "sft" and m["n_rows"] == 8


def test_self_taught_peft_goes_to_the_trainer_train_method_picks():
    lora = LoRASettings(r=R)
    assert SelfTaughtConfig(peft=lora).train_settings().lora == lora
    assert SelfTaughtConfig().train_settings().lora is None
    dpo = SelfTaughtConfig(train_method="dpo", peft=lora).train_settings()
    assert isinstance(dpo, DPOSettings) and dpo.lora == lora and dpo.nll_alpha == 1.5  # the rest kept
    inner = SelfTaughtConfig(sft=SFTSettings(lora=lora)).train_settings()
    assert isinstance(inner, SFTSettings) and inner.lora == lora
    with pytest.raises(ValidationError, match="peft and sft.lora are both set"):
        SelfTaughtConfig(peft=lora, sft=SFTSettings(lora=lora))
    assert SelfTaughtConfig(peft=lora, dpo=DPOSettings(lora=lora)).train_settings().lora == lora  # dpo unused


@pytest.mark.parametrize("build", [
    lambda lora: DPOConfig(peft=lora),
    lambda lora: sandbox_config(dpo={"peft": lora.model_dump()}),
    lambda lora: RejectionSFTConfig(peft=lora),
    lambda lora: SelfTaughtConfig(peft=lora),
    lambda lora: SelfTaughtConfig(sft=SFTSettings(lora=lora)),
    lambda lora: SelfTaughtConfig(train_method="dpo", dpo=DPOSettings(lora=lora)),
], ids=["meta_rewarding.dpo", "sandbox_config", "rejection_sft", "self_taught.peft", "self_taught.sft.lora",
        "self_taught.dpo.lora"])
def test_loops_refuse_unmerged_adapters(build):
    build(LoRASettings(merge=True))
    with pytest.raises(ValidationError, match=r"merge=False is not supported in a loop.*merge: true \(the default\)"):
        build(LoRASettings(merge=False))


def _one_error(args: list[str]) -> str:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit) and "Traceback" not in res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and len(res.stderr.splitlines()) == 1, res.stderr
    return lines[0]


def test_recipes_take_peft_overrides_and_name_typos(tmp_path):
    rec = load_recipe("meta_rewarding", ["config.dpo.peft.r=8", "config.dpo.peft.target_modules=[q_proj, v_proj]"])
    assert rec.resolved()["config"]["dpo"]["peft"] == {"r": 8, "alpha": 32.0, "dropout": 0.05,
                                                      "target_modules": ["q_proj", "v_proj"], "merge": True}
    st = load_recipe("self_taught", ["loop.peft.r=8"])
    assert st.loop.train_settings().lora == LoRASettings(r=8)
    res = CliRunner().invoke(app, ["run", "meta_rewarding", "--dry-run", "--set", "config.dpo.peft.r=8"])
    assert res.exit_code == 0, res.output
    run = tmp_path / "r"
    line = _one_error(["run", "meta_rewarding", "--set", "config.dpo.peft.alpah=8", "--run-dir", str(run)])
    assert "config.dpo.peft.alpah" in line and "did you mean 'alpha'?" in line
    assert "allowed keys here: alpha, dropout, merge, r, target_modules" in line
    line = _one_error(["run", "meta_rewarding", "--set", "config.dpo.peft.merge=false", "--run-dir", str(run)])
    assert "config.dpo.peft" in line and "merge=False is not supported in a loop" in line
    assert not run.exists()
    with pytest.raises(ConfigError, match=r"loop\.peft: .*merge=False is not supported"):
        load_recipe("self_taught", ["loop.peft.merge=false"])
