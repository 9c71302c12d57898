"""trainers/toy_lm.py: the plain-PyTorch loop used by the modeling CPU reproductions learns, is seeded, masks right."""

from __future__ import annotations

import random

import pytest
import torch

from loopwright.trainers.toy_lm import answer_error, collate, evaluate_answers, train_causal_lm


def _tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def _copy_rows(rng: random.Random, n: int) -> list[tuple[list[int], list[int]]]:
    """[1, a, b, 2, a, b]: the last two tokens (the copy) are supervised."""
    rows = []
    for _ in range(n):
        a, b = rng.randrange(3, 16), rng.randrange(3, 16)
        rows.append(([1, a, b, 2, a, b], [0, 0, 0, 0, 1, 1]))
    return rows


def test_collate_right_pads_with_zero_mask():
    ids, mask = collate([([5, 6, 7], [0, 1, 1]), {"input_ids": [8], "loss_mask": [1]}], pad_id=9)
    assert ids.tolist() == [[5, 6, 7], [8, 9, 9]]
    assert mask.tolist() == [[0, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="loss_mask"):
        collate([([1, 2], [1])])


def test_answer_error_counts_rows_with_any_wrong_supervised_token():
    class Oracle(torch.nn.Module):
        """Predicts token t+1 = t+1 (an arithmetic progression), as one-hot logits."""

        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids):
            return torch.nn.functional.one_hot((input_ids + 1) % 10, 10).float() + 0 * self.p

    rows = [([1, 2, 3, 4], [0, 0, 1, 1]),   # all right
            ([1, 2, 3, 9], [0, 0, 1, 1]),   # last supervised token wrong
            ([1, 5, 3, 4], [0, 0, 0, 1])]   # wrong token at an unsupervised position only
    out = evaluate_answers(Oracle(), rows)
    assert out["err_seq"] == pytest.approx(1 / 3)
    assert out["err_tok"] == pytest.approx(1 / 5)
    assert answer_error(Oracle(), rows, batch_size=2) == pytest.approx(1 / 3)


def test_training_learns_copy_task_and_is_seeded():
    test_rows = _copy_rows(random.Random(123), 64)
    model = _tiny_llama()
    before = answer_error(model, test_rows)
    fresh = lambda rng, bs: _copy_rows(rng, bs)  # noqa: E731
    out = train_causal_lm(model, fresh, steps=150, lr=1e-2, batch_size=32, seed=0, num_threads=1,
                          log=None, warmup_steps=10, eval_fn=lambda m, s: {"err": answer_error(m, test_rows)},
                          eval_every=75)
    after = answer_error(model, test_rows)
    assert before > 0.9
    assert after < 0.3, out["history"]
    assert out["metrics"]["final_loss"] < out["loss_curve"][0] / 3
    assert [h["step"] for h in out["history"] if "err" in h] == [75, 150]
    assert out["metrics"]["err"] == pytest.approx(after)

    # Same seed, same data: the same loss curve (fixed dataset path).
    data = _copy_rows(random.Random(7), 40)
    curves = [train_causal_lm(_tiny_llama(), data, steps=5, lr=1e-2, batch_size=16, seed=3, log=None,
                              num_threads=1)["loss_curve"] for _ in range(2)]
    assert curves[0] == curves[1]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="steps"):
        train_causal_lm(_tiny_llama(), [([1, 2], [0, 1])], steps=0, lr=1e-3, batch_size=1)
    with pytest.raises(ValueError, match="lr_decay"):
        train_causal_lm(_tiny_llama(), [([1, 2], [0, 1])], steps=1, lr=1e-3, batch_size=1, lr_decay="linear")
