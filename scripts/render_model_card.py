"""Render the model card of one pruned variant of a finished `hf-ssgr run` into `model_cards/`.

    python scripts/render_model_card.py outputs/quickstart ssgr__sparsegpt-50 [--out model_cards/NAME.md]

The card is built from the run's own files (pruning_config.json, eval/dense.json, eval/<variant>.json, the recipe in
manifest.json): every number in it was measured by that run.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import yaml  # noqa: E402

from hf_ssgr.evaluation.evaluate import EvalReport  # noqa: E402
from hf_ssgr.hub.cards import model_card  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("variant", help="<calibration>__<pruning variant>, as in the run's eval/ folder")
    ap.add_argument("--name", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    calibration, variant = args.variant.split("__")
    meta = json.load(open(os.path.join(args.run_dir, "pruned", calibration, variant, "pruning_config.json")))
    manifest = json.load(open(os.path.join(args.run_dir, "manifest.json")))
    recipe = manifest["recipe"]
    report = EvalReport.load(os.path.join(args.run_dir, "eval", f"{args.variant}.json"))
    dense = EvalReport.load(os.path.join(args.run_dir, "eval", "dense.json"))
    name = args.name or f"tiny-reasoner-{calibration}-{variant}"
    card = model_card(
        meta,
        report,
        dense,
        model_name=name,
        command=f"hf-ssgr run recipe.yaml   # then use pruned/{calibration}/{variant}",
        recipe=yaml.safe_dump({k: v for k, v in recipe.items() if v not in (None, {}, [])}, sort_keys=False),
        license="apache-2.0",
    )
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "model_cards", f"{name}.md")
    card.save(out)
    print(f"written {out}")


if __name__ == "__main__":
    main()
