"""Recipes: YAML files the CLI runs, validated by pydantic with errors that name the bad field.

A recipe file is a mapping whose ``recipe`` key names its kind; the rest are that kind's config fields
(TRL habit: config fields are the YAML keys; ``--set a.b=value`` overrides win over the file, which wins
over the defaults). Kinds are registered here by import path, so the models (and their heavy imports) load
only when a recipe of that kind runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError

# kind -> "module:Class" of a RecipeConfig subclass.
RECIPE_KINDS: dict[str, str] = {
    "sandbox": "loopwright.trainers.sandbox.pipeline:SandboxRecipe",
    "self_taught": "loopwright.judges.self_taught.recipe:SelfTaughtRecipe",
    "meta_rewarding": "loopwright.judges.meta_rewarding.recipe:MetaRewardingRecipe",
}

DEFAULT_RECIPE = "sandbox"


class RecipeConfig(BaseModel):
    """Base of every recipe model: unknown keys are errors, and ``run`` executes it in a run directory."""

    model_config = ConfigDict(extra="forbid")

    recipe: str
    seed: int = 0

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
    keys = dotted.split(".")
    cur = data
    for k in keys[:-1]:
        nxt = cur.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: {k!r} is not a mapping in this recipe")
        cur = nxt
    cur[keys[-1]] = value


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """Parse ``key.sub=value`` strings; values are read as YAML scalars (``3`` -> int, ``true`` -> bool)."""
    out = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        out.append((key.strip(), yaml.safe_load(raw)))
    return out


def _allowed_keys(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """Field names allowed at ``loc`` (the parent of an unknown key) inside ``model``."""
    cur: Any = model
    for part in loc:
        field = getattr(cur, "model_fields", {}).get(part) if isinstance(part, str) else None
        if field is None:
            return []
        cur = field.annotation
    return sorted(getattr(cur, "model_fields", {}))


def format_validation_error(err: ValidationError, model: type[BaseModel], source: str) -> str:
    lines = [f"invalid recipe {source}:"]
    for e in err.errors(include_url=False):
        loc = [p for p in e["loc"]]
        where = ".".join(str(p) for p in loc) or "<root>"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            lines.append(f"  unknown key {where!r}; allowed keys here: {', '.join(allowed)}")
        elif e["type"] in ("literal_error", "enum"):
            expected = (e.get("ctx") or {}).get("expected", "")
            lines.append(f"  {where}: {e['input']!r} is not allowed; allowed values: {expected}")
        else:
            lines.append(f"  {where}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


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
        if not path.is_file():
            raise ConfigError(f"recipe file {str(source)!r} not found; built-in recipes: "
                              f"{', '.join(list_builtin_recipes())}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"recipe {path} is not valid YAML: {e}") from None
        label = str(path)
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {label} must be a mapping, got {type(data).__name__}")
    for key, value in parse_overrides(overrides):
        _set_dotted(data, key, value)
    kind = data.get("recipe")
    if kind is None:
        raise ConfigError(f"recipe {label} has no 'recipe' key; allowed values: {', '.join(sorted(RECIPE_KINDS))}")
    model = recipe_model(str(kind))
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, model, label)) from None


def dump_recipe(recipe: RecipeConfig) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
