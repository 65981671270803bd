"""The stateful model of the one rule (#17), long: many more and longer sequences than CI runs.

    python bench/truth_model.py [--examples N] [--steps N] [--seed N]

Runs ``tests/test_truth_model.py``'s machine under the ``long`` Hypothesis profile (1,500
sequences of up to 30 steps by default; about 12 minutes on 2 cores). A failing sequence is
shrunk and printed; it is a bug in the engine, to be written down as an example test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, help="sequences to try (default: the long profile's)")
    parser.add_argument("--steps", type=int, help="steps per sequence (default: the long profile's)")
    parser.add_argument("--seed", type=int, help="Hypothesis seed, to replay a run")
    args = parser.parse_args()
    env = {**os.environ, "HYPOTHESIS_PROFILE": "long"}
    if args.examples:
        env["TRUTH_MODEL_EXAMPLES"] = str(args.examples)
    if args.steps:
        env["TRUTH_MODEL_STEPS"] = str(args.steps)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/test_truth_model.py",
        "-m",
        "slow",
        "-x",
        "-p",
        "no:cacheprovider",
        "--hypothesis-show-statistics",
    ]
    if args.seed is not None:
        command.append(f"--hypothesis-seed={args.seed}")
    return subprocess.call(command, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
