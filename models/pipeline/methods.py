"""Which method makes the predictions: OV-AVSS (a trained checkpoint) or the training-free zero-shot method."""

from __future__ import annotations

import os

from models.errors import UsageError

METHODS = ("auto", "ovavss", "zeroshot")
"""`--method` values; "auto" = ovavss when a checkpoint is given, zeroshot otherwise."""

WHERE_CHECKPOINTS_COME_FROM = (
    "an official one (download links in the OV-AVSS README, https://github.com/ruohaoguo/ovavss, Baidu Netdisk) "
    "or one trained with `avseg train` (RUN_DIR/last.pt)"
)


def choose_method(method: str, checkpoint: str | os.PathLike | None) -> str:
    """"ovavss" or "zeroshot" for `--method` and `--checkpoint`; a usage error when they contradict each other."""
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}: use {', '.join(METHODS)}")
    if method == "auto":
        return "ovavss" if checkpoint is not None else "zeroshot"
    if method == "ovavss" and checkpoint is None:
        raise UsageError(f"--method ovavss needs --checkpoint FILE, an OV-AVSS checkpoint: {WHERE_CHECKPOINTS_COME_FROM}")
    if method == "zeroshot" and checkpoint is not None:
        raise UsageError("--method zeroshot uses no checkpoint: drop --checkpoint, or use --method ovavss")
    return method


def reject_other_method_options(method: str, given: dict[str, object]) -> None:
    """Usage error when options of the other method were given (`given`: option name -> value or None)."""
    for name, value in given.items():
        if value not in (None, False):
            raise UsageError(f"{name} applies to the {'zero-shot' if method == 'ovavss' else 'OV-AVSS'} method only "
                             f"(this run uses --method {method})")
