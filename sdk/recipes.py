"""Recipes: YAML files the CLI runs, validated by pydantic with errors that name the bad field.

A recipe file is a mapping whose ``recipe`` key names its kind; the rest are that kind's config fields
(TRL habit: config fields are the YAML keys; ``--set a.b=value`` overrides win over the file, which wins
over the defaults). Kinds are registered here by import path, so the models (and their heavy imports) load
only when a recipe of that kind runs.
"""

from __future__ import annotations

import difflib
import importlib
import typing
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError

MAX_RECIPE_BYTES = 1_000_000
"""Recipes are short config files; a larger input is refused before parsing (issue 17, item 8)."""
MAX_DEPTH = 32
"""Nesting cap for recipe YAML: real recipes nest 3 deep; PyYAML composes recursively (a 20,000-deep list overflows)."""
MAX_ECHO = 200
"""Characters of user input echoed back in an error message."""


def clip(value: Any, limit: int = MAX_ECHO) -> str:
    """``repr(value)`` cut to ``limit`` characters, so an error never echoes a huge input."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


class _RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases (billion-laughs bombs) and with a nesting cap.

    Safe tags only (a ``!!python/object`` tag is refused by SafeLoader's constructor); anchors alone are harmless,
    but every ``*alias`` is refused, since expanding them is what makes a 1 KB file explode.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"YAML aliases (*{clip(event.anchor, 40)}) are not allowed in recipes; write the "
                "value out", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()
                raise yaml.composer.ComposerError(None, None, f"nesting deeper than {MAX_DEPTH} levels",
                                                  event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _yaml_error_line(err: yaml.YAMLError) -> str:
    """One line out of a PyYAML error: the problem and its line/column, with any echoed input clipped."""
    if isinstance(err, yaml.constructor.ConstructorError) and "could not determine a constructor" in str(err.problem):
        tag = str(err.problem).rsplit("tag:yaml.org,2002:", 1)[-1].strip("'")
        return f"the tag !!{clip(tag, 80)} is not allowed (recipes hold plain YAML values only)"
    if isinstance(err, yaml.MarkedYAMLError):
        parts = [err.context, err.problem]
        mark = err.problem_mark or err.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        text = "; ".join(p for p in parts if p) + where
    else:
        text = str(err)
    return clip(" ".join(text.split()), 300)


def safe_yaml_load(text: str, what: str) -> Any:
    """Parse recipe YAML: safe tags only, no aliases, at most :data:`MAX_DEPTH` deep; errors are one line."""
    if len(text) > MAX_RECIPE_BYTES:
        raise ConfigError(f"{what} is {len(text):,} characters; recipes are capped at {MAX_RECIPE_BYTES:,}")
    loader = _RecipeLoader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} is not valid recipe YAML: {_yaml_error_line(e)}") from None
    finally:
        loader.dispose()


def read_recipe_text(path: Path) -> str:
    """The text of recipe file ``path``: capped at :data:`MAX_RECIPE_BYTES`, UTF-8 (a BOM allowed), not binary."""
    size = path.stat().st_size
    if size > MAX_RECIPE_BYTES:
        raise ConfigError(f"recipe {path} is {size:,} bytes; recipes are capped at {MAX_RECIPE_BYTES:,} bytes "
                          "(is this the right file?)")
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"recipe {path} is UTF-16 text; save it as UTF-8")
    if b"\x00" in raw:
        raise ConfigError(f"recipe {path} is a binary file, not YAML text; pass a .yaml recipe")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"recipe {path} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None

# kind -> "module:Class" of a RecipeConfig subclass.
RECIPE_KINDS: dict[str, str] = {
    "sandbox": "loopwright.trainers.sandbox.pipeline:SandboxRecipe",
    "self_taught": "loopwright.judges.self_taught.recipe:SelfTaughtRecipe",
    "meta_rewarding": "loopwright.judges.meta_rewarding.recipe:MetaRewardingRecipe",
    "loop": "loopwright.judges.loops.recipe:LoopRecipe",
}

DEFAULT_RECIPE = "sandbox"


class RecipeConfig(BaseModel):
    """Base of every recipe model: unknown keys are errors, and ``run`` executes it in a run directory."""

    model_config = ConfigDict(extra="forbid")

    recipe: str
    seed: int = 0

    def check(self, source: str) -> None:
        """Deeper checks that must pass before a run folder is made (nested configs, model folders).

        Raise :class:`ConfigError` naming the key; ``source`` names the recipe for the message. Default: none.
        """

    def resolved(self) -> dict[str, Any]:
        """The recipe with every default filled in, as plain data (``loopwright run --dry-run`` prints it)."""
        return self.model_dump(mode="json")

    def run(self, run_dir: Path, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
        raise NotImplementedError


def builtin_recipe_path(name: str) -> Path:
    """Path of a recipe shipped with loopwright (``recipes/<name>.yaml``)."""
    path = Path(str(resources.files("loopwright") / "recipes" / f"{name}.yaml"))
    if not path.is_file():
        raise ConfigError(f"no built-in recipe {name!r}; built-in recipes: {', '.join(list_builtin_recipes())}")
    return path


def list_builtin_recipes() -> list[str]:
    folder = resources.files("loopwright") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in ``data``; a number indexes a list (``stages.0.generate.n=2``)."""
    keys = dotted.split(".")
    cur: Any = data
    for i, k in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(cur, list):
            if not k.isdigit() or int(k) >= len(cur):
                raise ConfigError(f"--set {clip(dotted, 120)}: {'.'.join(keys[:i]) or 'the recipe'} is a list of "
                                  f"{len(cur)} items; index it with 0..{len(cur) - 1}")
            k = int(k)  # type: ignore[assignment]
            if last:
                cur[k] = value
                return
            if cur[k] is None or isinstance(cur[k], str):  # `- evaluate` (a bare name) takes a config mapping
                cur[k] = {cur[k]: {}} if isinstance(cur[k], str) else {}
            cur = cur[k]
            continue
        if not isinstance(cur, dict):
            raise ConfigError(f"--set {clip(dotted, 120)}: {'.'.join(keys[:i])!r} is not a mapping in this recipe")
        if last:
            cur[k] = value
            return
        if cur.get(k) is None:
            cur[k] = {}
        cur = cur[k]


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """Parse ``key.sub=value`` strings; values are read as YAML scalars (``3`` -> int, ``true`` -> bool)."""
    out = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {clip(item)} must look like key.sub=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not k for k in key.split(".")):
            raise ConfigError(f"override {clip(item)} has an empty key; write it as key.sub=value")
        out.append((key, safe_yaml_load(raw, f"--set {clip(item, 120)}")))
    return out


def _allowed_keys(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """Field names allowed at ``loc`` (the parent of an unknown key) inside ``model``."""
    cur: Any = model
    for part in loc:
        field = getattr(cur, "model_fields", {}).get(part) if isinstance(part, str) else None
        if field is None:
            return []
        cur = _model_of(field.annotation)
    return sorted(getattr(cur, "model_fields", {}))


def _model_of(annotation: Any) -> Any:
    """The pydantic model inside ``annotation`` (``Model``, ``Model | None``), else ``annotation``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def format_validation_error(err: ValidationError, model: type[BaseModel], source: str,
                            prefix: Sequence[str] = ()) -> str:
    """One line per problem naming the dotted key and what is allowed there; one problem gives one line.

    ``prefix`` is the key path of ``model`` inside the recipe (``("config",)`` for a nested config checked later).
    Echoed values are clipped to :data:`MAX_ECHO` characters.
    """
    problems = []
    for e in err.errors(include_url=False):
        loc = [p for p in e["loc"]]
        where = ".".join(str(p) for p in [*prefix, *loc]) or "<root>"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            near = _near(str(loc[-1]), allowed) if loc else []
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            problems.append(f"unknown key {clip(where)!r}{hint}; allowed keys here: {', '.join(allowed) or '(none)'}")
        elif e["type"] in ("literal_error", "enum"):
            expected = (e.get("ctx") or {}).get("expected", "")
            problems.append(f"{where}: {clip(e['input'])} is not allowed; allowed values: {expected}")
        else:
            problems.append(f"{where}: {e['msg']} (got {clip(e.get('input'))})")
    if len(problems) == 1:
        return f"invalid recipe {source}: {problems[0]}"
    return "\n".join([f"invalid recipe {source} ({len(problems)} problems):", *(f"  {p}" for p in problems)])


def _near(key: str, allowed: Sequence[str]) -> list[str]:
    """The allowed key a typo most likely meant: same letters in another case, else the closest spelling."""
    same = [a for a in allowed if a.lower() == key.lower()]
    return same or difflib.get_close_matches(key, allowed, n=1)


def recipe_model(kind: str) -> type[RecipeConfig]:
    if kind not in RECIPE_KINDS:
        raise ConfigError(f"unknown recipe kind {kind!r}; allowed values: {', '.join(sorted(RECIPE_KINDS))}")
    module, cls = RECIPE_KINDS[kind].split(":")
    return getattr(importlib.import_module(module), cls)


def load_recipe(source: str | Path | dict[str, Any] | None = None, overrides: Sequence[str] = ()) -> RecipeConfig:
    """Load and validate a recipe from a YAML path, a built-in name, or a dict (``None`` = the default recipe)."""
    if source is None:
        source = builtin_recipe_path(DEFAULT_RECIPE)
    if isinstance(source, dict):
        data, label = dict(source), "<dict>"
    else:
        path = Path(source)
        if not path.exists() and not str(source).endswith((".yaml", ".yml")):
            path = builtin_recipe_path(str(source))
        if not path.exists():
            raise ConfigError(f"no recipe file {clip(str(source))}; pass a YAML path or a built-in recipe: "
                              f"{', '.join(list_builtin_recipes())}")
        if path.is_dir():
            raise ConfigError(f"recipe {path} is a folder; pass its .yaml file (or a run folder to `loopwright "
                              "resume`)")
        data = safe_yaml_load(read_recipe_text(path), f"recipe {path}")
        data = {} if data is None else data
        label = str(path)
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {label} must be a mapping of keys (recipe: KIND, ...), got {type(data).__name__}")
    for key, value in parse_overrides(overrides):
        _set_dotted(data, key, value)
    kind = data.get("recipe")
    if kind is None:
        raise ConfigError(f"recipe {label} has no 'recipe' key; allowed values: {', '.join(sorted(RECIPE_KINDS))}")
    model = recipe_model(clip(str(kind), 80))
    try:
        cfg = model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, model, label)) from None
    cfg.check(label)
    return cfg


def dump_recipe(recipe: RecipeConfig) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
