"""A loopwright judge used from another project, in about ten lines, against any OpenAI-compatible endpoint.

    python examples/judge_as_library.py                      # serves the sandbox seed model with vLLM (offline)
    python examples/judge_as_library.py --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-7B-Instruct

The lines between the ``---`` markers are what another project writes: build a pairwise judge on an endpoint
(vLLM, SGLang, TGI, a hosted API), compare answers (both orders, one batched call), read the Verdicts
(preference, order consistency, provenance; an unparseable verdict is ``valid=False`` with a reason, never a
default), and hand the same judge to TRL as a reward function. With no ``--base-url`` the script starts a vLLM
server on the ~1M-parameter sandbox seed model, which cannot follow a judge rubric: expect invalid verdicts.
"""

from __future__ import annotations

import argparse
import contextlib

QUESTIONS = ["What is 17 + 25?", "Name the capital of France."]
ANSWERS_A = ["17 + 25 = 42. #### 42", "Paris is the capital of France."]
ANSWERS_B = ["17 + 25 = 32. #### 32", "Lyon."]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-url", help="OpenAI-compatible endpoint (default: start vLLM on the sandbox model)")
    ap.add_argument("--model", default="sandbox", help="served model name (default: sandbox)")
    ap.add_argument("--max-tokens", type=int, default=128, help="new tokens per judgement")
    args = ap.parse_args()

    with contextlib.ExitStack() as stack:
        base_url = args.base_url
        if base_url is None:
            from loopwright.sdk.server import VLLMServer
            from loopwright.trainers.sandbox.seed import ensure_seed_model

            server = stack.enter_context(VLLMServer(ensure_seed_model(), served_model_name=args.model))
            base_url = server.base_url
            print(f"serving the sandbox seed model at {base_url}")

        # --- judge as a library -----------------------------------------------------------------------------
        from loopwright.judges import PairwiseJudge
        from loopwright.judges.adapters.trl import as_reward_func
        from loopwright.sdk.generators.openai import OpenAIGenerator
        from loopwright.sdk.types import SamplingParams

        judge = PairwiseJudge(OpenAIGenerator(base_url, args.model),
                              sampling=SamplingParams(max_tokens=args.max_tokens, truncate_prompt=True))
        for v in judge.compare(QUESTIONS, ANSWERS_A, ANSWERS_B):  # both orders, one batched call
            print(v.preference if v.valid else f"invalid: {v.invalid_reason}",
                  f"| orders agree: {v.swap.consistent} | {v.judge.model} template {v.judge.template_hash}")
        reward_fn = as_reward_func(judge, mode="pairwise")  # TRL GRPOTrainer(reward_funcs=[reward_fn]); B = reference
        # ------------------------------------------------------------------------------------------------------
        rewards = reward_fn(prompts=QUESTIONS, completions=ANSWERS_A, reference=ANSWERS_B)
        print(f"TRL rewards (None = invalid verdict): {rewards}")


if __name__ == "__main__":
    main()
