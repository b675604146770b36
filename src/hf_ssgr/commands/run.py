"""`hf-ssgr run RECIPE.yaml`: calibrate → prune → evaluate → report, in one output folder, resumable.

```
hf-ssgr run recipes/quickstart.yaml [--output_dir DIR] [--limit 50] [--policies ssgr rac] ...
```

Every field of the recipe (`hf_ssgr.recipes.RunConfig`) is also a flag that overrides it; nested fields (`prune`,
`calibration`, `policy_overrides`, `eval_data_files`) take YAML, e.g. `--prune "[{method: wanda, sparsity: 0.5}]"`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from ..recipes import RunConfig
from .parser import CommandError, SsgrParser

__all__ = ["RunOverrides", "make_parser", "main"]


_UNIONS = (typing.Union, types.UnionType)


def _override_type(annotation: Any) -> Any:
    """The flag type of a recipe field: itself (optional) when a flag can carry it, else `Any` (read as YAML)."""
    if typing.get_origin(annotation) in _UNIONS:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else Any
    if annotation in (str, int, float, bool) or annotation == list[str]:
        return annotation | None
    return Any


_HINTS = typing.get_type_hints(RunConfig)
RunOverrides = dataclasses.make_dataclass(
    "RunOverrides",
    [
        (
            f.name,
            _override_type(_HINTS[f.name]),
            dataclasses.field(default=None, metadata={"help": f"Recipe field `{f.name}` (overrides the recipe)."}),
        )
        for f in dataclasses.fields(RunConfig)
        if f.init
    ],  # fmt: skip
)
RunOverrides.__doc__ = "The recipe fields, as flags that override the recipe's values (None: the recipe's)."


def make_parser() -> SsgrParser:
    return SsgrParser("hf-ssgr run", [RunOverrides], description=__doc__, positional="recipe")


def main(argv: list[str]) -> int:
    from ..distributed import is_main_process
    from ..recipes import run_recipe

    overrides, recipe = make_parser().parse(argv)
    if not recipe:
        raise CommandError("usage: hf-ssgr run RECIPE.yaml [--field value ...] (the recipe's fields are flags)")
    values = {k: v for k, v in dataclasses.asdict(overrides).items() if v is not None}
    cfg = RunConfig.from_yaml(recipe, **values)
    result = run_recipe(cfg)
    if is_main_process():
        with open(result["report"], encoding="utf-8") as f:
            print(f.read())
        print(f"Everything is in {cfg.output_dir} (report: {result['report']})")
    return 0
