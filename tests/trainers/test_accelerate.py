"""Multi-process training through accelerate (issue 16 item 2): 2 processes (torchrun via ``accelerate launch``, gloo
on 127.0.0.1, a free port) run our SFT and DPO wrappers on the sandbox seed model, and match a single-process run with
the same global batch (2 x 2 rows vs 1 x 4 rows per step); the model folder is written once, by rank 0.

The data order is pinned (``train_sampling_strategy="sequential"``): SFT's default length-grouped sampler builds its
mega-batches from the *per-device* batch size, so its order legitimately differs between 1 x 4 and 2 x 2. With a
fixed order, DDP's gradient average equals the single-process batch gradient (DPO: per-pair mean; SFT: TRL/transformers
average tokens across devices), so the only difference is float summation order: measured |rel. diff| ~1e-6 on the
loss, asserted at rtol 1e-3 (3 steps of Adam amplify rounding a little; 1e-3 is still far below a real mismatch,
which shows up at the first step at the 1e-1 level).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from loopwright.sdk.artifacts import read_json, write_jsonl
from loopwright.trainers.launch import TrainJob, accelerate_command, free_port, load_jobs, local_env, run_job
from loopwright.trainers.result import read_train_manifest

TRL = {"logging_steps": 1, "train_sampling_strategy": "sequential", "lr_scheduler_type": "constant", "ddp_timeout": 120}


@pytest.fixture(scope="module")
def seed_dir() -> Path:
    from loopwright.trainers.sandbox.seed import ensure_seed_model

    return ensure_seed_model(progress=False)


def _jobs(seed_dir: Path, tmp: Path, per_device: int, tag: str) -> list[TrainJob]:
    sft = [{"prompt": f"What is {i} plus 3?", "target": f"{i}+3={i + 3} #### {i + 3}"} for i in range(8)]
    dpo = [{"prompt": [{"role": "user", "content": f"What is {i} plus 3?"}],
            "chosen": [{"role": "assistant", "content": f"{i + 3}"}],
            "rejected": [{"role": "assistant", "content": f"{i + 4}"}]} for i in range(8)]
    write_jsonl(tmp / "sft.jsonl", sft)
    write_jsonl(tmp / "dpo.jsonl", dpo)
    common = {"max_steps": 3, "batch_size": per_device, "max_length": 64}
    return [
        TrainJob(kind="sft", base=str(seed_dir), data=str(tmp / "sft.jsonl"), out=str(tmp / "models" / f"sft-{tag}"),
                 settings={**common, "learning_rate": 1e-2}, trl_config=TRL),
        TrainJob(kind="dpo", base=str(seed_dir), data=str(tmp / "dpo.jsonl"), out=str(tmp / "models" / f"dpo-{tag}"),
                 settings={**common, "learning_rate": 1e-3}, trl_config=TRL),
    ]


def _weights(path: str | Path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(str(path)).state_dict()


@pytest.mark.timeout(600)
def test_two_processes_match_one_process_and_rank0_saves_once(seed_dir, tmp_path):
    two = _jobs(seed_dir, tmp_path, per_device=2, tag="2proc")
    job_file = tmp_path / "jobs.json"
    job_file.write_text(json.dumps([j.model_dump() for j in two]))
    assert [j.kind for j in load_jobs(job_file)] == ["sft", "dpo"]
    cmd = accelerate_command(job_file, num_processes=2, port=free_port(), result_dir=tmp_path / "ranks")
    assert cmd[cmd.index("--main_process_ip") + 1] == "127.0.0.1"
    env = local_env({"MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"})
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    r0, r1 = read_json(tmp_path / "ranks" / "rank0.json"), read_json(tmp_path / "ranks" / "rank1.json")
    assert r0["world_size"] == r1["world_size"] == 2 and r0["pid"] != r1["pid"]
    assert r0["saved"] == [j.out for j in two] and r1["saved"] == []  # one writer: rank 0
    # nothing left behind by either rank: no temporary or per-rank folders next to the models
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["dpo-2proc", "sft-2proc"]

    one = [run_job(j) for j in _jobs(seed_dir, tmp_path, per_device=4, tag="1proc")]
    for job, single, res0, res1 in zip(two, one, r0["results"], r1["results"], strict=True):
        m = read_train_manifest(job.out)
        assert m["kind"] == job.kind and m["metrics"]["steps"] == 3 and m["trl_config"]["per_device_train_batch_size"] == 2
        # both ranks saw the same (gathered) losses, and they match the single process with the same global batch
        assert res0["metrics"]["loss_history"] == res1["metrics"]["loss_history"] == m["loss_history"]
        assert m["loss_history"] == pytest.approx(single.metrics["loss_history"], rel=1e-3)
        assert len(m["loss_history"]) == 3 and m["loss_history"][0] != m["loss_history"][-1]
        w2, w1, w0 = _weights(job.out), _weights(single.model_dir), _weights(seed_dir)
        assert max((w2[k] - w1[k]).abs().max().item() for k in w1) < 1e-4  # same update, up to rounding
        assert sum(not torch.equal(w2[k], w0[k]) for k in w0) >= len(w0) // 2  # and it is a real update


def test_train_cli_validates_before_launching(seed_dir, tmp_path):
    from loopwright.sdk.cli import app

    runner = CliRunner()
    rows = tmp_path / "rows.jsonl"
    write_jsonl(rows, [{"prompt": "1+1?", "target": "2"}])
    base = ["train", "sft", "--base", str(seed_dir), "--data", str(rows), "--out", str(tmp_path / "o")]
    bad = runner.invoke(app, [*base, "--launcher", "slurm"])
    assert bad.exit_code == 2 and "--launcher 'slurm'; use none or accelerate" in bad.output
    bad = runner.invoke(app, [*base, "--settings", '{"max_stepz": 1}', "--launcher", "accelerate"])
    assert bad.exit_code == 2 and "max_stepz" in bad.output and not (tmp_path / "o").exists()
    bad = runner.invoke(app, [*base, "--launcher", "accelerate", "--accelerate-config", str(tmp_path / "no.yaml")])
    assert bad.exit_code == 2 and "no.yaml not found" in bad.output
    ok = runner.invoke(app, [*base, "--settings", '{"max_steps": 1, "batch_size": 1, "max_length": 32}'])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output.strip().splitlines()[-1])["model_dir"] == str(tmp_path / "o")
    assert read_train_manifest(tmp_path / "o")["metrics"]["steps"] == 1
