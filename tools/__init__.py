"""loopwright.tools: typed tools (sdk.tool.Tool) for tool-using agents such as Chain-of-Abstraction.

- :class:`~loopwright.tools.calculator.Calculator` — exact arithmetic via a whitelisted AST;
- :class:`~loopwright.tools.equation_solver.EquationSolver` — the CoA math reifier (placeholder systems, sympy);
- :class:`~loopwright.tools.wikipedia.WikipediaSearch` — offline FTS5/BM25 index or online wikipedia-api, plus
  :func:`~loopwright.tools.wikipedia.extract_answer`.

Each exports ``openai_schema()`` and ``as_function()`` (a typed function for TRL's ``tools=``). Import the
submodules directly; this file stays import-light.
"""
