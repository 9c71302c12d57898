"""The Tool interface: a typed function with a pydantic argument model.

``run(args)`` validates the arguments and never raises for bad input or a failing tool: it returns a
:class:`ToolResult` with ``ok=False`` and the error. The same definition exports as an OpenAI function
schema (``openai_schema``) and as a plain typed Python function (``as_function``) for TRL's ``tools=``.
"""

from __future__ import annotations

import inspect
import json
import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from .types import ToolResult


class Tool(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    args_model: ClassVar[type[BaseModel]]

    @abstractmethod
    def _run(self, args: BaseModel) -> Any:
        """Do the work on validated arguments; may raise, ``run`` turns exceptions into failed results."""

    def run(self, args: dict[str, Any] | BaseModel) -> ToolResult:
        start = time.perf_counter()
        try:
            parsed = args if isinstance(args, self.args_model) else self.args_model.model_validate(args)
        except ValidationError as e:
            return ToolResult(ok=False, error=f"invalid arguments for {self.name}: {e.errors(include_url=False)}")
        try:
            value = self._run(parsed)
        except Exception as e:  # noqa: BLE001 - a tool failure is data, not a crash
            return ToolResult(ok=False, error=f"{type(e).__name__}: {e}", latency_s=time.perf_counter() - start)
        if isinstance(value, ToolResult):
            return value
        return ToolResult(ok=True, value=value, latency_s=time.perf_counter() - start)

    def openai_schema(self) -> dict[str, Any]:
        """``{"type": "function", "function": {name, description, parameters}}``."""
        params = self.args_model.model_json_schema()
        params.pop("title", None)
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": params}}

    def as_function(self):
        """A plain typed function with a Google-style docstring, as TRL's ``tools=`` expects.

        It returns the tool's value as a string (JSON for non-string values), or ``"error: ..."`` when the call
        failed, matching the declared ``-> str`` that TRL reads from the signature.
        """
        fields = self.args_model.model_fields
        params = [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=f.annotation,
                              default=inspect.Parameter.empty if f.is_required() else f.default)
            for n, f in fields.items()
        ]

        def fn(**kwargs: Any) -> Any:
            res = self.run(kwargs)
            if not res.ok:
                return f"error: {res.error}"
            return res.value if isinstance(res.value, str) else json.dumps(res.value, default=str)

        fn.__name__ = self.name
        fn.__signature__ = inspect.Signature(params, return_annotation=str)  # type: ignore[attr-defined]
        fn.__annotations__ = {n: f.annotation for n, f in fields.items()} | {"return": str}
        args_doc = "\n".join(f"    {n}: {f.description or n}" for n, f in fields.items())
        fn.__doc__ = f"{self.description}\n\nArgs:\n{args_doc}\n"
        return fn
