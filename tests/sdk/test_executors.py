"""Local and Ray Data executors give the same completions for the same prompts and seeds."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Sequence

import pytest

from loopwright.sdk.errors import ConfigError
from loopwright.sdk.executors import LocalExecutor, RayExecutor, init_ray, shutdown_ray
from loopwright.sdk.generator import Generator
from loopwright.sdk.types import Completion, Prompt, SamplingParams

PROMPTS: list[Prompt] = [f"Question {i}: what is {i} plus {i + 3}?" for i in range(10)] + [
    [{"role": "user", "content": "Tom has 12 pens. He buys 7 more."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world"}],
]


def _transformers_factory(model_dir):
    from loopwright.sdk.generators.transformers import TransformersGenerator

    return functools.partial(TransformersGenerator, str(model_dir))


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray for the module (loopback only, 200 MiB object store), shut down at the end."""
    assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0"  # set by conftest before `import ray`
    init_ray()
    import ray

    yield ray
    shutdown_ray()
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def local_gen(tiny_model_dir):
    gen = _transformers_factory(tiny_model_dir)()
    yield gen
    gen.close()


def test_ray_binds_loopback(ray_local):
    assert ray_local.util.get_node_ip_address() == "127.0.0.1"
    nodes = ray_local.nodes()
    assert nodes and all(n["NodeManagerAddress"] == "127.0.0.1" for n in nodes)
    assert ray_local.cluster_resources()["CPU"] == 2


@pytest.mark.parametrize(
    ("params", "num_actors"),
    [
        (SamplingParams(max_tokens=6), 1),
        (SamplingParams(n=2, temperature=1.0, seed=11, max_tokens=6, logprobs=0), 2),
    ],
    ids=["greedy", "seeded-n2"],
)
def test_ray_output_equals_local(ray_local, tiny_model_dir, local_gen, params, num_actors):
    local = LocalExecutor(local_gen, batch_size=5, progress=False).run(PROMPTS, params)
    remote = RayExecutor(_transformers_factory(tiny_model_dir), batch_size=5, num_actors=num_actors).run(PROMPTS, params)
    assert len(local) == len(PROMPTS) and all(len(row) == params.n for row in local)
    assert all(c.token_ids for row in local for c in row)
    # Tokens, text, finish reasons and usage are identical. Logprobs agree to float32 rounding only: Ray runs
    # each actor's torch with num_cpus_per_actor threads, and a different thread count reorders reductions.
    exact = {"logprobs", "top_logprobs"}
    assert [[c.model_dump(exclude=exact) for c in row] for row in remote] == [
        [c.model_dump(exclude=exact) for c in row] for row in local
    ]
    for r_row, l_row in zip(remote, local, strict=True):
        for r, c in zip(r_row, l_row, strict=True):
            assert (r.logprobs is None) == (c.logprobs is None)
            if c.logprobs is not None:
                assert r.logprobs == pytest.approx(c.logprobs, abs=1e-5)
    if params.n == 2:  # two different samples per prompt, not one sample twice
        assert any(row[0].token_ids != row[1].token_ids for row in local)


class _SlowAsync(Generator):
    """An I/O-bound test double: answers after a short sleep and records how many calls overlap."""

    backend = "test-async"

    def __init__(self):
        self.in_flight = 0
        self.max_in_flight = 0
        self.batches: list[int] = []

    async def agenerate(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[list[Completion]]:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.batches.append(len(prompts))
        await asyncio.sleep(0.05 if "0" in str(prompts[0]) else 0.01)  # the first batch finishes last
        self.in_flight -= 1
        n = (params or SamplingParams()).n
        return [[Completion(text=f"{p}#{j}") for j in range(n)] for p in prompts]


def test_local_concurrency_keeps_order():
    prompts = [f"p{i}" for i in range(23)]
    gen = _SlowAsync()
    out = LocalExecutor(gen, batch_size=4, max_concurrency=3, progress=False).run(prompts, SamplingParams(n=2))
    assert [[c.text for c in row] for row in out] == [[f"p{i}#0", f"p{i}#1"] for i in range(23)]
    assert gen.batches == [4, 4, 4, 4, 4, 3]
    assert gen.max_in_flight == 3

    seq = _SlowAsync()
    assert LocalExecutor(seq, batch_size=4, progress=False).run(prompts, SamplingParams(n=2)) == out
    assert seq.max_in_flight == 1


def test_executor_misuse_raises():
    with pytest.raises(ConfigError, match="batch_size must be a positive integer, got 0"):
        LocalExecutor(_SlowAsync(), batch_size=0)
    with pytest.raises(ConfigError, match="max_concurrency"):
        LocalExecutor(_SlowAsync(), max_concurrency=0)
    with pytest.raises(TypeError, match="zero-argument factory"):
        RayExecutor(_SlowAsync())  # an instance, not a factory: it would be pickled with its engine
    assert RayExecutor(_SlowAsync).run([]) == []
