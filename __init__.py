"""loopwright: typed, composable parts for self-improving LLM loops (generate -> judge -> filter -> train).

Importing this package is cheap on purpose: it loads none of torch, vllm, ray, trl or langgraph.
Sub-packages: ``loopwright.sdk`` (types, interfaces, generators, cache, executors, tasks, CLI),
``loopwright.tools``, ``loopwright.agents``, ``loopwright.judges``, ``loopwright.trainers``,
``loopwright.modeling`` and ``loopwright.kernels``.
"""

__version__ = "0.1.0"
