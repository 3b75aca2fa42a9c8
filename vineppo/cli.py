"""`vineppo train|eval|compare|demo|sft` (also `python -m vineppo ...`, `accelerate launch -m vineppo ...`)."""

from __future__ import annotations

import argparse
import sys


def _train(args) -> int:
    from vineppo.config import load_config
    from vineppo.loop import train

    cfg = load_config(args.config, args.overrides)
    train(cfg, args.output_dir, resume=args.resume)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vineppo", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="run VinePPO / PPO iterations")
    t.add_argument("--config", required=True, help="YAML config (see configs/)")
    t.add_argument("--output-dir", required=True, help="run directory (config.yaml, metrics.jsonl, checkpoints/)")
    t.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. iterations=2 mc.k=3 optim.lr=1e-5")
    t.set_defaults(func=_train)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from vineppo.config import ConfigError
    try:
        return args.func(args)
    except ConfigError as e:
        parser.exit(2, f"vineppo: config error: {e}\n")


if __name__ == "__main__":
    sys.exit(main())
