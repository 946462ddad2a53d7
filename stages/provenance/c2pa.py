"""C2PA content credentials: build the manifest of a clip, sign it into the MP4, read it back.

What a clip's manifest says (``c2pa-python``, the C2PA reference library's binding, offline):

* an actions assertion (``c2pa.actions.v2``): ``c2pa.created`` with digital source type
  ``trainedAlgorithmicMedia`` for a clip made from a still portrait; for dubbed footage (a row
  with ``source_video``) ``c2pa.opened`` of the footage then ``c2pa.edited`` with
  ``compositeWithTrainedAlgorithmicMedia``;
* ingredients, one per input (the portrait or the footage, the speech, a pose or expression
  video): file name, format and sha256, never their content (no thumbnails);
* claim generator info: ``FixTalk Studio``, the software version, the model's checkpoint id;
* ``com.fixtalk.provenance``: the same facts for tools that do not read ingredients, the
  presenter's consent record (an identifier, or a file's name and sha256) and the disclosure
  statement / visible label.

The manifest is embedded in the MP4 and bound to its bytes (a BMFF hash): a re-encoded file has
no manifest any more, an edited one fails the hash. :func:`read_credentials` reports both.
"""
from __future__ import annotations

import hashlib
import json
import mimetypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import c2pa

from stages.base import ClipError, SystemicError
from stages.provenance.signing_identity import SigningIdentity

CLAIM_GENERATOR = "FixTalk Studio"
ASSERTION = "com.fixtalk.provenance"
SOURCE_TYPES = "http://cv.iptc.org/newscodes/digitalsourcetype/"
CREATED, EDITED = "trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"
UNTRUSTED = "signingCredential.untrusted"
#: why a row without consent fails when ``provenance.require_consent`` is on (field: ``consent``)
CONSENT_MISSING = ("empty, and provenance.require_consent is on; give the presenter's recorded agreement "
                   "(a file or an identifier) in the 'consent' column")
#: row column -> (ingredient role, relationship)
INPUT_ROLES = (("source_video", "footage", "parentOf"), ("portrait", "portrait", "inputTo"),
               ("audio", "speech", "inputTo"), ("pose_video", "pose_video", "inputTo"),
               ("expression_video", "expression_video", "inputTo"),
               ("presenter_video", "presenter_footage", "inputTo"))
_FORMATS = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".flac": "audio/flac",
            ".ogg": "audio/ogg", ".webp": "image/webp", ".heic": "image/heic"}


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file's content."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _format(path: Path) -> str:
    return _FORMATS.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _text(value: Any) -> str | None:
    return None if value is None or str(value).strip() == "" else str(value).strip()


def consent_record(value: Any) -> dict[str, str] | None:
    """The consent cell as recorded: a file's name and sha256, or the identifier as written."""
    text = _text(value)
    if text is None:
        return None
    path = Path(text).expanduser()
    if path.is_file():
        return {"file": path.name, "sha256": sha256_of(path)}
    return {"id": text}


def ingredients(row: dict[str, Any]) -> list[dict[str, Any]]:
    """One ingredient per input file of the row; the portrait is left out for dubbed footage."""
    dubbed = _text(row.get("source_video")) is not None
    out = []
    for column, role, relationship in INPUT_ROLES:
        value = _text(row.get(column))
        if value is None or (dubbed and role == "portrait"):
            continue
        path = Path(value)
        if not path.is_file():
            raise ClipError(f"{path} is gone; the credentials must name every input", field=column)
        digest = sha256_of(path)
        out.append({"title": path.name, "format": _format(path), "relationship": relationship,
                    "instance_id": f"fixtalk:{role}:sha256:{digest}", "label": role,
                    "description": f"{role}, sha256 {digest}",
                    "metadata": {"fixtalk:role": role, "fixtalk:sha256": digest}})
    return out


def manifest_definition(row: dict[str, Any], *, statement: str, label: str | None,
                        label_seconds: float | None) -> dict[str, Any]:
    """The manifest definition of one clip (see the module docstring)."""
    parts = ingredients(row)
    version = _text(row.get("code_version")) or "unknown"
    checkpoint = _text(row.get("checkpoint_id")) or "unknown"
    agent = {"name": CLAIM_GENERATOR, "version": version}
    inputs = [p["label"] for p in parts if p["relationship"] == "inputTo"]
    parent = [p["label"] for p in parts if p["relationship"] == "parentOf"]
    if parent:
        actions = [{"action": "c2pa.opened", "parameters": {"ingredientIds": parent}},
                   {"action": "c2pa.edited", "digitalSourceType": SOURCE_TYPES + EDITED,
                    "softwareAgent": agent, "description": "speech dubbed onto the footage by a trained model",
                    "parameters": {"ingredientIds": inputs}}]
    else:
        actions = [{"action": "c2pa.created", "digitalSourceType": SOURCE_TYPES + CREATED,
                    "softwareAgent": agent, "description": "talking head generated from a still portrait",
                    "parameters": {"ingredientIds": inputs}}]
    facts = {"clip_id": str(row.get("clip_id")), "generator": CLAIM_GENERATOR, "version": version,
             "checkpoint_id": checkpoint, "digital_source_type": EDITED if parent else CREATED,
             "inputs": [{"role": p["label"], "title": p["title"], "sha256": p["metadata"]["fixtalk:sha256"]}
                        for p in parts],
             "consent": consent_record(row.get("consent")),
             "disclosure": {"statement": statement, "visible_label": label,
                            "label_seconds": (label_seconds or None) if label else None}}
    return {"claim_generator_info": [{**agent, "checkpoint_id": checkpoint}],
            "title": f"{row.get('clip_id')}.mp4", "format": "video/mp4", "ingredients": parts,
            "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": actions}},
                           {"label": ASSERTION, "data": facts}]}


def sign_mp4(src: Path, dst: Path, definition: dict[str, Any], identity: SigningIdentity) -> str:
    """Write ``src`` with the signed manifest embedded to ``dst``; returns the manifest id.

    A certificate the C2PA library refuses is systemic (every clip would fail); anything else
    fails this clip."""
    try:
        signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(identity.alg, identity.chain_pem,
                                                           identity.key_pem, None))
        with c2pa.Builder(definition) as builder, open(src, "rb") as source, open(dst, "w+b") as dest:
            builder.sign(signer, "video/mp4", source, dest)
    except c2pa.C2paError.Signature as exc:
        raise SystemicError(_refused(exc)) from exc
    except c2pa.C2paError as exc:
        raise ClipError(f"signing the content credentials failed ({exc})", error_type="SigningFailed") from exc
    found = read_credentials(dst)
    if not found.manifest_id:
        raise ClipError(f"the signed file carries no readable manifest ({found.reason})",
                        error_type="SigningFailed")
    return found.manifest_id


def check_signer(identity: SigningIdentity) -> None:
    """Sign a tiny in-memory PNG with ``identity``: a certificate the C2PA library refuses raises
    :class:`SystemicError` here, before any clip is rendered."""
    import io

    from PIL import Image

    image = io.BytesIO()
    Image.new("RGB", (8, 8)).save(image, format="PNG")
    image.seek(0)
    created = {"action": "c2pa.created", "digitalSourceType": SOURCE_TYPES + CREATED}
    definition = {"claim_generator_info": [{"name": CLAIM_GENERATOR, "version": "check"}],
                  "title": "check.png", "format": "image/png",
                  "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": [created]}}]}
    try:
        signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(identity.alg, identity.chain_pem,
                                                           identity.key_pem, None))
        with c2pa.Builder(definition) as builder:
            builder.sign(signer, "image/png", image, io.BytesIO())
    except c2pa.C2paError.Signature as exc:
        raise SystemicError(_refused(exc)) from exc
    except c2pa.C2paError as exc:
        raise SystemicError(f"provenance: the C2PA library cannot sign ({exc}); set "
                            "provenance.enabled=false to render without content credentials") from exc


def _refused(exc: Exception) -> str:
    return (f"provenance.cert: the C2PA library refused the signing certificate ({exc}); it needs a "
            "signer certificate issued by a CA (not self-signed), with the digitalSignature key usage "
            "and the emailProtection or documentSigning extended key usage, followed by its CA "
            "certificate(s)")


@dataclass
class Credentials:
    """What :func:`read_credentials` found in one file."""

    path: str
    ok: bool = False  # a valid manifest made by this tool (trusted or not)
    reason: str | None = None  # why not ok
    manifest_id: str | None = None
    state: str | None = None  # the library's validation state: Invalid | Valid | Trusted
    trusted: bool = False
    signer: str | None = None
    issuer: str | None = None
    generator: str | None = None
    version: str | None = None
    checkpoint_id: str | None = None
    actions: list[str] = field(default_factory=list)
    digital_source_type: str | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    consent: dict[str, Any] | None = None
    disclosure: dict[str, Any] | None = None
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _context(trust_pem: bytes | None) -> c2pa.Context | None:
    if not trust_pem:
        return None
    return c2pa.Context(c2pa.Settings.from_dict({"trust": {"trust_anchors": trust_pem.decode()}}))


def read_credentials(path: str | Path, trust_pem: bytes | None = None) -> Credentials:
    """Read and validate the manifest of ``path``; ``trust_pem``: extra trusted CA certificates."""
    found = Credentials(path=str(path))
    if not Path(path).is_file():
        found.reason = "file not found"
        return found
    try:
        reader = c2pa.Reader.try_create(str(path), context=_context(trust_pem))
    except c2pa.C2paError as exc:
        found.reason = f"unreadable content credentials ({exc})"
        return found
    if reader is None:
        found.reason = "no content credentials (no C2PA manifest; re-encoded or never signed)"
        return found
    with reader:
        _fill(found, reader.get_active_manifest() or {}, json.loads(reader.json()))
        found.state = reader.get_validation_state()
        results = (reader.get_validation_results() or {}).get("activeManifest", {})
    codes = [f.get("code", "") for f in results.get("failure", [])]
    found.trusted = found.state == "Trusted"
    found.failures = [c for c in codes if c != UNTRUSTED]
    if UNTRUSTED in codes:
        found.warnings.append(f"signer {found.signer!r} is not on a trust list (a local or private "
                              "certificate); the content is intact")
    if found.failures:
        tampered = any("hash" in c or "mismatch" in c for c in found.failures)
        found.reason = ("tampered: the file no longer matches its signed hash" if tampered
                        else "invalid content credentials") + f" ({', '.join(found.failures)})"
    elif found.generator != CLAIM_GENERATOR:
        found.reason = f"credentials made by {found.generator or 'an unknown tool'}, not {CLAIM_GENERATOR}"
    else:
        found.ok = True
    return found


def _fill(found: Credentials, manifest: dict[str, Any], store: dict[str, Any]) -> None:
    found.manifest_id = manifest.get("label") or store.get("active_manifest")
    info = (manifest.get("claim_generator_info") or [{}])[0]
    found.generator, found.version = info.get("name"), info.get("version")
    found.checkpoint_id = info.get("checkpoint_id")
    sig = manifest.get("signature_info") or {}
    found.signer, found.issuer = sig.get("common_name") or sig.get("issuer"), sig.get("issuer")
    for assertion in manifest.get("assertions", []):
        data = assertion.get("data") or {}
        if assertion.get("label", "").startswith("c2pa.actions"):
            for action in data.get("actions", []):
                found.actions.append(action.get("action"))
                if action.get("digitalSourceType"):
                    found.digital_source_type = action["digitalSourceType"].rsplit("/", 1)[-1]
        elif assertion.get("label") == ASSERTION:
            found.consent, found.disclosure = data.get("consent"), data.get("disclosure")
    found.inputs = [{"role": (i.get("metadata") or {}).get("fixtalk:role", i.get("relationship")),
                     "title": i.get("title"), "sha256": (i.get("metadata") or {}).get("fixtalk:sha256"),
                     "relationship": i.get("relationship")} for i in manifest.get("ingredients", [])]
