"""Diagnostic: CSL with the loss of its feature-perturbation (FP) stream switched off.

On the synthetic scenes CSL ends far below supervised training, while FixMatch with the CSL selector and
CSL without the FP loss do not (docs/methods/csl.md: Results). This script trains a CSL config with
L_fp's weight set to 0 and everything else unchanged, so that the comparison is one command:

    python benchmarks/scripts/csl_without_fp.py configs/synthetic/csl_no_tmp.yaml --out runs/csl_without_fp seed=0

It is a diagnostic, not a method variant: it wraps the `masked_ce` that `semiseg.methods.csl` calls
three times per step, in the order L_s1, L_s2, L_fp (the order of `CSL.training_step`), and multiplies
the third by 0; the run's `metrics.jsonl` then logs `loss_fp` = 0, which the script checks at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a CSL config, e.g. configs/synthetic/csl_no_tmp.yaml")
    parser.add_argument("--out", required=True, help="the run's output_dir (replaced if it holds a run)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args()

    import semiseg.methods.csl as csl
    from semiseg.cli import main as semiseg_main

    real, calls = csl.masked_ce, [0]

    def without_fp(*a, **k):
        calls[0] += 1
        loss = real(*a, **k)
        return loss * 0.0 if calls[0] % 3 == 0 else loss  # the third call of a step is L_fp

    csl.masked_ce = without_fp
    code = semiseg_main(["train", args.config, f"output_dir={args.out}", "--overwrite", *args.overrides])
    if code == 0:
        lines = (Path(args.out) / "metrics.jsonl").read_text().splitlines()
        fp = [json.loads(x)["loss_fp"] for x in lines if '"loss_fp"' in x]
        if not fp or any(v != 0 for v in fp):
            print("error: loss_fp was not 0 in every logged step: the call order of CSL.training_step changed",
                  file=sys.stderr)
            return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
