"""`hf-ssgr calibrate`: build a calibration Dataset from a model's own reasoning (or any policy) and save it.

```
hf-ssgr calibrate --model tiny --source tiny-arith --policy ssgr --save_dir calib/ [--num_samples 128 ...]
```
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..calibration.config import CalibrationConfig
from .parser import CommandError, SsgrParser

__all__ = ["CalibrateArguments", "make_parser", "main"]


@dataclass
class CalibrateArguments:
    """Inputs and outputs of `hf-ssgr calibrate`."""

    model: str = field(default=None, metadata={"help": "The model that generates (Hub id, folder, or `tiny`)."})
    source: str = field(default=None, metadata={"help": "Problem source (MathR, GSM8K, tiny-arith, ...) or corpus."})
    save_dir: str = field(default=None, metadata={"help": "Where the Dataset is written (save_to_disk)."})
    push_to_hub: str = field(default=None, metadata={"help": "Also upload the Dataset to this Hub repo id."})
    push_rollouts: bool = field(default=False, metadata={"help": "Upload the rollout store with it."})
    private: bool = field(default=False, metadata={"help": "Make the uploaded repo private."})


def make_parser() -> SsgrParser:
    return SsgrParser("hf-ssgr calibrate", [CalibrateArguments, CalibrationConfig], description=__doc__)


def main(argv: list[str]) -> int:
    from ..calibration.calibrator import SSGRCalibrator
    from ..distributed import is_main_process, wait_for_everyone
    from ..utils import check_model_path, check_output, resolve_model, write_folder_atomically

    args, config = make_parser().parse(argv)
    if args.save_dir:
        check_output(args.save_dir, "--save_dir")
    missing = [f"--{n}" for n in ("model", "source", "save_dir") if not getattr(args, n)]
    if missing:
        raise CommandError(f"{' '.join(missing)} required.")
    check_model_path(resolve_model(args.model))  # before the source: a missing model is the error to report
    calibrator = SSGRCalibrator(config)
    ds = calibrator.build(resolve_model(args.model), args.source)
    if is_main_process():  # under torchrun every process holds the same rows; one writes them
        write_folder_atomically(args.save_dir, ds.save_to_disk)
        print(f"{len(ds)} calibration rows ({config.policy}) written to {args.save_dir}")
    wait_for_everyone()
    if is_main_process() and args.push_to_hub:
        from ..hub.upload import push_calibration_to_hub

        rollouts = config.rollouts_dir if args.push_rollouts else None
        info = push_calibration_to_hub(ds, args.push_to_hub, rollouts_dir=rollouts, private=args.private)
        print(f"Pushed to {getattr(info, 'commit_url', args.push_to_hub)}")
    return 0
