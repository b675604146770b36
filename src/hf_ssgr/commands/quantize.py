"""`hf-ssgr quantize`: export a folder written by `hf-ssgr prune` as compressed-tensors FP8 (data-free).

```
hf-ssgr quantize ./pruned ./pruned-fp8 [--scheme fp8]
```

`fp8` is compressed-tensors' FP8_DYNAMIC: FP8 E4M3 weights with per-output-channel scales, dynamic per-token FP8
activations; lm_head, embeddings, norms, routers and fused experts stay in the compute dtype. No calibration data is
used. The output loads with `AutoModelForCausalLM.from_pretrained` and vLLM; its `pruning_config.json` and card record
the pruning, then the quantization.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .parser import CommandError, SsgrParser

__all__ = ["QuantizeArguments", "make_parser", "main"]


@dataclass
class QuantizeArguments:
    """Inputs of `hf-ssgr quantize` (SRC and DST may also be given as the two positional arguments)."""

    src: str = field(default=None, metadata={"help": "A folder written by hf-ssgr prune (with pruning_config.json)."})
    dst: str = field(default=None, metadata={"help": "The folder to write the quantized model to (replaced whole)."})
    scheme: str = field(
        default="fp8", metadata={"help": "The quantization scheme: fp8 (compressed-tensors FP8_DYNAMIC)."}
    )


def make_parser() -> SsgrParser:
    return SsgrParser("hf-ssgr quantize", [QuantizeArguments], description=__doc__)


def _split_positionals(argv: list[str]) -> tuple[list[str], list[str]]:
    """The leading arguments that are not flags (SRC DST), and the rest."""
    positionals = []
    while argv and not argv[0].startswith("-"):
        positionals.append(argv.pop(0))
    return positionals, argv


def main(argv: list[str]) -> int:
    from ..hub.quantize import check_scheme, quantize_pretrained

    positionals, rest = _split_positionals(list(argv))
    if len(positionals) > 2:
        raise CommandError(f"takes SRC and DST, got {len(positionals)} positional arguments: {positionals}.")
    (args,) = make_parser().parse(rest)
    for name, value in zip(("src", "dst"), positionals):
        if getattr(args, name) not in (None, value):
            raise CommandError(f"{name.upper()} given twice: {value!r} and --{name} {getattr(args, name)!r}.")
        setattr(args, name, value)
    missing = [n.upper() for n in ("src", "dst") if not getattr(args, n)]
    if missing:
        raise CommandError(f"{' and '.join(missing)} required: hf-ssgr quantize SRC DST [--scheme fp8].")
    check_scheme(args.scheme)
    command = f"hf-ssgr quantize {args.src} {args.dst} --scheme {args.scheme}"
    out = quantize_pretrained(args.src, args.dst, scheme=args.scheme, command=command)
    print(f"Saved the {args.scheme} export to {out}")
    return 0
