"""Command line: `python -m pipeline.cli run|schema --config configs/penguins.yaml`."""

from __future__ import annotations

import argparse
import sys

from pipeline.config import load_config
from pipeline.errors import ConfigError


def _run(args: argparse.Namespace) -> int:
    from pipeline import local_runner

    config = load_config(args.config, output_root=args.output_root)
    summary = local_runner.run(config)
    return 0 if summary["status"] == "succeeded" else 1


def _schema(args: argparse.Namespace) -> int:
    from pipeline import schema

    config = load_config(args.config, output_root=args.output_root)
    path = schema.write_inferred_schema(config, args.out)
    print(f"wrote {path}; review it (types, domains, presence) and set schema_file in {args.config}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tfx-pipeline", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name, func, text in (
        ("run", _run, "run the whole pipeline locally (Beam DirectRunner, SQLite ML Metadata)"),
        ("schema", _schema, "infer a schema from the config's data, to curate and commit"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--config", default="configs/penguins.yaml", help="pipeline config YAML")
        cmd.add_argument("--output-root", default=None, help="overrides outputs.root of the config")
        cmd.set_defaults(func=func)
        if name == "schema":
            cmd.add_argument("--out", required=True, help="schema .pbtxt to write")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
