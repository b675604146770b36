"""The one parser of every `hf-ssgr` command: typed flags from dataclasses, and `--config FILE.yaml` for any of them.

Built on `transformers.HfArgumentParser`, in the shape of TRL's `TrlParser`: each command declares its arguments as
dataclasses; `--config` reads a YAML mapping of the same field names, which become the defaults, and the flags given
on the command line override them. An unknown flag or YAML key is an error that names it, never ignored. Mapping
fields (`data_files`, `vllm_kwargs`, ...) take a YAML or JSON mapping on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from collections.abc import Sequence
from typing import Any

import yaml

__all__ = ["CommandError", "SsgrParser"]


class CommandError(Exception):
    """A mistake in a command's input: printed as one line, `hf-ssgr COMMAND: message`, with exit code 2."""


def _yaml_mapping(text: str) -> dict:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise argparse.ArgumentTypeError(f"not a YAML/JSON mapping: {text!r} ({err})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"not a mapping: {text!r}; write it as '{{key: value}}'")
    return value


def _string_or_yaml(text: str) -> Any:
    """A field typed `Any` (a path, a mapping of paths, a list of configurations): a YAML mapping or list when written
    as one, else the string."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (dict, list)) else text


def _is_any(annotation: Any) -> bool:
    return annotation is Any or annotation == "Any"


def _is_mapping(annotation: Any) -> bool:
    if isinstance(annotation, str):
        return annotation.replace(" ", "").startswith(("dict", "Dict", "dict[", "typing.Dict"))
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_is_mapping(a) for a in typing.get_args(annotation) if a is not type(None))
    return annotation is dict or origin is dict


class SsgrParser:
    """The parser of one `hf-ssgr` command.

    Args:
        prog (`str`): the command, for usage lines and messages ("hf-ssgr prune").
        dataclass_types (`Sequence[type]`): the dataclasses whose fields are the command's flags.
        description (`str`, *optional*): shown by `--help`.
        positional (`str`, *optional*): the name of one positional argument (`hf-ssgr run RECIPE.yaml`).
    """

    def __init__(self, prog: str, dataclass_types: Sequence[type], description: str | None = None,
                 positional: str | None = None):  # fmt: skip
        from transformers import HfArgumentParser

        self.prog = prog
        self.dataclass_types = list(dataclass_types)
        self.positional = positional
        if description:  # the command module's docstring, its example block shown as written
            description = "\n".join(line for line in description.strip().splitlines() if not line.startswith("```"))
        # no abbreviations: `--conf FILE` must not pass for `--config FILE` (it did, and the file was never read)
        self.parser = HfArgumentParser(self.dataclass_types, prog=prog, description=description, allow_abbrev=False,
                                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        self.parser.error = self._error  # argparse would print its usage and exit; say it in one line instead
        all_fields = [f for d in self.dataclass_types for f in dataclasses.fields(d) if f.init]
        mapping_fields = {f.name for f in all_fields if _is_mapping(f.type)}
        any_fields = {f.name for f in all_fields if _is_any(f.type)}
        for action in self.parser._actions:
            if action.dest in mapping_fields:
                action.type = _yaml_mapping
            elif action.dest in any_fields:
                action.type = _string_or_yaml
        if positional:
            self.parser.add_argument(positional, nargs="?", default=None, help=f"the {positional}")
        self.parser.add_argument(
            "--config",
            default=None,
            metavar="FILE.yaml",
            help="YAML mapping of any of these flags; flags override it.",
        )
        self.fields = {f.name for d in self.dataclass_types for f in dataclasses.fields(d)}

    def _error(self, message: str):
        raise CommandError(f"{message} (see {self.prog} --help)")

    def format_help(self) -> str:
        return self.parser.format_help()

    def read_config(self, path: str) -> dict[str, Any]:
        """The YAML mapping of `--config`, with its keys checked against the flags."""
        if not os.path.isfile(path):
            raise CommandError(f"--config {path}: no such file.")
        with open(path, encoding="utf-8") as f:
            try:
                values = yaml.safe_load(f)
            except yaml.YAMLError as err:
                raise CommandError(f"--config {path} is not valid YAML: {err}") from None
        if values is None:
            return {}
        if not isinstance(values, dict):
            raise CommandError(f"--config {path} must be a YAML mapping of flag names, not a {type(values).__name__}.")
        unknown = sorted(set(values) - self.fields)
        if unknown:
            raise CommandError(f"--config {path}: unknown field(s) {unknown}; valid fields: {sorted(self.fields)}.")
        return values

    def parse(self, argv: Sequence[str]) -> tuple[Any, ...]:
        """Parse `argv` into one instance of each dataclass (and the positional argument last, when declared).

        A dataclass that refuses its values (`__post_init__`) raises a [`CommandError`] with its message.
        """
        argv = list(argv)
        config, rest = [], []
        i = 0
        while i < len(argv):  # `--config FILE` and `--config=FILE`, once
            arg = argv[i]
            if arg == "--config":
                if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                    raise CommandError("--config needs a YAML file.")
                config.append(argv[i + 1])
                i += 2
                continue
            if arg.startswith("--config="):
                config.append(arg.split("=", 1)[1])
            else:
                rest.append(arg)
            i += 1
        if len(config) > 1:
            raise CommandError(f"--config given {len(config)} times ({', '.join(config)}): give one file.")
        if config:
            self.parser.set_defaults(**self.read_config(config[0]))
        namespace = self.parser.parse_args(rest)
        values = vars(namespace)
        values.pop("config", None)
        positional = values.pop(self.positional, None) if self.positional else None
        outputs = []
        for dtype in self.dataclass_types:
            names = {f.name for f in dataclasses.fields(dtype) if f.init}
            try:
                outputs.append(dtype(**{k: v for k, v in values.items() if k in names}))
            except (TypeError, ValueError) as err:
                raise CommandError(str(err)) from None
        return (*outputs, positional) if self.positional else tuple(outputs)
