"""The benchmark from the command line, until (and beside) ``python -m distill bench``:

    OMP_NUM_THREADS=1 python tools/bench.py --device cpu --out runs/bench [--model small_cnn] [--quick]

Writes OUT/bench.json and OUT/bench.md (see distill/bench/ and docs/performance.md).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill import UserError
from distill.bench import SECTIONS, env_prefix, run_bench


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--model", default=None, help="teacher member architecture (default: small_cnn / resnet18)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench"))
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of a few seconds")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's setting)")
    ap.add_argument("--data-root", type=Path, default=None, help="the epoch's dataset (default ../shared/data)")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    args = ap.parse_args()
    command = env_prefix() + "python " + " ".join(shlex.quote(a) for a in sys.argv)
    try:
        run_bench(
            args.device, args.model, args.out, args.quick,
            threads=args.threads, data_root=args.data_root, sections=tuple(args.sections), command=command,
        )  # fmt: skip
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print((args.out / "bench.md").read_text())


if __name__ == "__main__":
    main()
