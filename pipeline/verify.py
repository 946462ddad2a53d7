"""``fixtalk verify CLIP...``: read the content credentials of clips back and judge them.

For each clip it prints whether the C2PA manifest is valid, who signed it, what was generated
(the action and digital source type), from which inputs (names and sha256), by which model
(checkpoint id) and software version, the consent record and the disclosure statement.

Exit 0 when every clip carries a valid manifest made by FixTalk Studio; a signer that is not on a
trust list (the local identity, or a private CA not given with ``--trust``) is a warning, not a
failure. Exit 1 when any clip has no manifest (never signed, or re-encoded), a manifest that no
longer matches the file (edited), or credentials made by another tool; the reason is printed.
Exit 2 on usage errors.

    fixtalk verify out/clips/*.mp4
    fixtalk verify clip.mp4 --trust my-ca.pem --format json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from stages.provenance.c2pa import Credentials, read_credentials

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fixtalk verify", description=__doc__.split("\n")[0])
    p.add_argument("clips", nargs="+", help="MP4 files made by fixtalk run")
    p.add_argument("--trust", action="append", default=[], metavar="CA.pem",
                   help="PEM file of CA certificates to trust (repeatable), e.g. your own signing CA")
    p.add_argument("--format", choices=("text", "json"), default="text")
    return p


def _inputs(found: Credentials) -> str:
    return ", ".join(f"{i['role']} {i['title']} (sha256 {str(i.get('sha256') or '?')[:12]})"
                     for i in found.inputs) or "none recorded"


def describe(found: Credentials) -> str:
    """A few readable lines about one clip's credentials."""
    if not found.manifest_id:
        return f"{found.path}: FAIL: {found.reason}"
    verdict = "ok" if found.ok else f"FAIL: {found.reason}"
    trust = "trusted" if found.trusted else "untrusted signer"
    lines = [f"{found.path}: {verdict}",
             f"  manifest   {found.manifest_id} ({found.state}, {trust})",
             f"  signer     {found.signer} (issued by {found.issuer})",
             f"  generated  {', '.join(a for a in found.actions if a)} / {found.digital_source_type}",
             f"  inputs     {_inputs(found)}",
             f"  model      checkpoint {found.checkpoint_id}; {found.generator} {found.version}"]
    if found.consent:
        lines.append(f"  consent    {found.consent.get('id') or found.consent.get('file')}"
                     + (f" (sha256 {found.consent['sha256'][:12]})" if found.consent.get("sha256") else ""))
    if found.disclosure:
        lines.append(f"  disclosure {found.disclosure.get('statement')}"
                     + (f" (visible label: {found.disclosure['visible_label']!r})"
                        if found.disclosure.get("visible_label") else ""))
    lines += [f"  warning    {w}" for w in found.warnings]
    return "\n".join(lines)


def read_trust(paths: Iterable[str]) -> bytes | None:
    """The concatenated PEM of ``--trust`` files (None when none); OSError when unreadable."""
    data = b"".join(Path(p).read_bytes() for p in paths)
    return data or None


def verify_paths(paths: Iterable[str | Path], trust_pem: bytes | None = None) -> list[Credentials]:
    return [read_credentials(p, trust_pem) for p in paths]


def credentials_column(paths: Iterable[Any], trust_pem: bytes | None = None) -> list[str]:
    """One short verdict per clip path, for ``fixtalk audit --credentials``: ``valid``,
    ``valid (untrusted signer)``, or the reason it is not valid."""
    out = []
    for path in paths:
        if path is None or (isinstance(path, float) and path != path):
            out.append("no clip")
            continue
        found = read_credentials(path, trust_pem)
        out.append(("valid" if found.trusted else "valid (untrusted signer)") if found.ok else str(found.reason))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        trust = read_trust(args.trust)
    except OSError as exc:
        print(f"fixtalk verify: --trust: {exc}", file=sys.stderr)
        return EXIT_USAGE
    results = verify_paths(args.clips, trust)
    if args.format == "json":
        print(json.dumps([r.to_dict() for r in results], indent=1))
    else:
        print("\n".join(describe(r) for r in results))
    bad = [r for r in results if not r.ok]
    if bad:
        print(f"fixtalk verify: {len(bad)} of {len(results)} clip(s) without valid credentials",
              file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
