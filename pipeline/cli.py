"""The ``fixtalk`` command.

    fixtalk run MANIFEST --out OUT [--config FILE] [--set key=value ...] [--checkpoint PATH]
                [--retry-failed] [--only FILE] [--shard i/n] [--limit N] [--address auto]
    fixtalk manifest import clips.xlsx|clips.csv -o manifest.parquet
    fixtalk manifest validate FILE
    fixtalk audit OUT ...           (pipeline.audit)
    fixtalk verify CLIP...          (pipeline.verify: content credentials)
    fixtalk qc CLIP [--portrait IMAGE] [--script TEXT | --script-file FILE] [--format json|table]
                                    (pipeline.qc_clip: QC of one existing clip)
    fixtalk train ... / fixtalk data synthetic ... (fixtalk.train.cli)
    fixtalk data prepare VIDEO_DIR OUT ...        (pipeline.data_prepare: a Ray Data job)
    fixtalk eval --checkpoint CKPT --data DATA [--adapt] ...   (fixtalk.train.evaluate)

Exit codes of ``run``: 0 all clips ok, 3 some failed, 2 usage or invalid manifest, 1 systemic error.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

EXIT_USAGE = 2
DISPATCH = {"audit": "pipeline.audit", "verify": "pipeline.verify", "qc": "pipeline.qc_clip",
            "train": "fixtalk.train.cli", "data": "pipeline.data_prepare", "eval": "fixtalk.train.evaluate"}
#: modules whose ``main`` takes the arguments after the command (the others get the command too)
OWN_ARGV = ("pipeline.audit", "pipeline.verify", "pipeline.qc_clip", "fixtalk.train.evaluate")


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on usage errors, which is our usage exit code too."""


def _run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="render every clip of a manifest", description=(
        "Render a manifest (.parquet, .csv or .xlsx) into OUT/clips/<clip_id>.mp4, with "
        "OUT/results.parquet and OUT/run.json. Reruns skip finished clips."))
    p.add_argument("manifest", help="manifest file: .parquet, .csv or .xlsx")
    p.add_argument("--out", required=True, help="output folder (shared storage for multi-node runs)")
    p.add_argument("--config", help="YAML config file (sections run, model, speech, ingest, ...)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set render.output=crop (repeatable)")
    p.add_argument("--checkpoint", help="model checkpoint (.pt); default: the shipped model")
    p.add_argument("--retry-failed", action="store_true", help="render clips that failed before again")
    p.add_argument("--only", metavar="FILE", help="render exactly the clip_ids listed in FILE (one per line)")
    p.add_argument("--shard", metavar="i/n", help="render only shard i of n (0 <= i < n), by hash of clip_id")
    p.add_argument("--limit", type=int, metavar="N", help="render at most N clips this time")
    p.add_argument("--address", help="join a running Ray cluster ('auto' or host:port) instead of starting one")
    p.add_argument("-v", "--verbose", action="store_true", help="log stage resources and Ray details")


def _manifest_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("manifest", help="import or validate a manifest")
    msub = p.add_subparsers(dest="manifest_cmd", required=True, parser_class=_Parser)
    imp = msub.add_parser("import", help="convert a spreadsheet (.xlsx/.csv) to a Parquet manifest")
    imp.add_argument("source", help="clips.xlsx or clips.csv")
    imp.add_argument("-o", "--output", required=True, help="manifest.parquet to write")
    val = msub.add_parser("validate", help="print every problem with its row and column (exit 2 if any)")
    val.add_argument("file", help="manifest: .parquet, .csv or .xlsx")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fixtalk", description="FixTalk Studio: batch talking-head videos from a manifest.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _run_parser(sub)
    _manifest_parser(sub)
    for name, help_text in (("audit", "list clips of a finished run by QC metric or status"),
                            ("verify", "check the content credentials (C2PA) of clips"),
                            ("qc", "QC of one existing clip (any MP4): metrics and verdict"),
                            ("train", "train a model (see fixtalk.train)"),
                            ("data", "prepare training data (see fixtalk.train)"),
                            ("eval", "evaluate a checkpoint on held-out clips (fixtalk.train.evaluate)")):
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from manifests.importer import ManifestError
    from pipeline.config import ConfigError
    from pipeline.run import RunRequest, UsageError, run

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.verbose:
        logging.getLogger("pipeline").setLevel(logging.INFO)
    req = RunRequest(manifest=args.manifest, out=args.out, config_path=args.config, overrides=args.overrides,
                     checkpoint=args.checkpoint, retry_failed=args.retry_failed, only=args.only,
                     shard=args.shard, limit=args.limit, address=args.address)
    try:
        return run(req).exit_code
    except (ManifestError, ConfigError, UsageError, OSError) as exc:
        print(f"fixtalk run: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _cmd_manifest(args: argparse.Namespace) -> int:
    from manifests.importer import ManifestError, import_manifest
    from manifests.validate import load_manifest

    try:
        if args.manifest_cmd == "import":
            frame = import_manifest(args.source, args.output)
            print(f"wrote {args.output}: {len(frame)} rows, columns {', '.join(frame.columns)}")
            return 0
        result = load_manifest(args.file)
    except ManifestError as exc:
        print(f"invalid manifest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for problem in result.problems:
        print(problem)
    n_rows = len(result.frame)
    if result.problems:
        print(f"{len(result.problems)} problem(s) in {result.n_failed} of {n_rows} rows", file=sys.stderr)
        return EXIT_USAGE
    print(f"ok: {n_rows} rows, no problems", file=sys.stderr)
    return 0


def _dispatch(command: str, argv: Sequence[str]) -> int:
    module_name = DISPATCH[command]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        print(f"fixtalk {command}: not available ({module_name}: {exc})", file=sys.stderr)
        return 1
    forwarded = list(argv) if module_name in OWN_ARGV else [command, *argv]
    result = module.main(forwarded)
    return int(result or 0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DISPATCH:
        return _dispatch(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return _cmd_run(args)
    if args.command == "manifest":
        return _cmd_manifest(args)
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
