"""Who signs the content credentials: the user's certificate and key, or a local identity.

* ``provenance.cert`` / ``provenance.key``: a PEM certificate chain (signer first, then its CA
  certificates) and the matching PEM private key. The algorithm follows the key: EC P-256 ->
  ES256, P-384 -> ES384, P-521 -> ES512, RSA -> PS256, Ed25519 -> Ed25519. A file that is missing,
  unreadable, encrypted or does not match is a :class:`~stages.base.SystemicError` (the run stops
  with the fix), never a failed clip.
* Without them, a **local signing identity** is made once: a small CA and an EC P-256 leaf with
  the key usage the C2PA library requires of a signer (digitalSignature, extended key usage
  emailProtection), stored under ``<config dir>/c2pa/`` where the config dir is
  ``provenance.identity_dir``, else ``$XDG_CONFIG_HOME/fixtalk-studio``, else
  ``~/.config/fixtalk-studio``. Nobody else trusts that CA, so ``fixtalk verify`` reports clips
  signed with it as valid but *untrusted*.

:func:`make_ca_and_leaf` is public so a user (or a test) can make a chain of the right shape.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stages.base import SystemicError

APP_DIR = "fixtalk-studio"
LOCAL_SUBDIR = "c2pa"
LOCAL_CHAIN = "local-signer-chain.pem"
LOCAL_KEY = "local-signer.key"
LOCAL_CA = "local-ca.pem"
LOCAL_SIGNER_NAME = "FixTalk Studio local signer"
_CURVE_ALG = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}


@dataclass(frozen=True)
class SigningIdentity:
    """A certificate chain and key ready for the C2PA signer."""

    chain_pem: bytes  # leaf first, then its CA(s)
    key_pem: bytes  # PKCS#8, unencrypted
    alg: str  # es256 | es384 | es512 | ps256 | ed25519
    signer_name: str  # the leaf's common name (or organisation)
    local: bool  # True: the untrusted local identity made by this tool


def config_dir(override: str | None = None) -> Path:
    """``override``, else ``$XDG_CONFIG_HOME/fixtalk-studio``, else ``~/.config/fixtalk-studio``."""
    if override:
        return Path(os.path.expanduser(override))
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / APP_DIR


def _name(common_name: str, organisation: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca_and_leaf(common_name: str, organisation: str = "FixTalk Studio", *,
                     curve: ec.EllipticCurve | None = None, days: int = 3650
                     ) -> tuple[bytes, bytes, bytes]:
    """A CA and a signer certificate issued by it, EC keys on ``curve`` (default P-256).

    Returns ``(chain_pem, leaf_key_pem, ca_pem)``; ``chain_pem`` is the leaf then the CA, the
    shape the C2PA signer wants (a self-signed certificate cannot sign credentials).
    """
    curve = curve or ec.SECP256R1()
    digest = {"secp384r1": hashes.SHA384(), "secp521r1": hashes.SHA512()}.get(curve.name, hashes.SHA256())
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=days)
    ca_key, leaf_key = ec.generate_private_key(curve), ec.generate_private_key(curve)
    ca_name = _name(f"{common_name} CA", organisation)
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(until)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, digest))
    leaf = (x509.CertificateBuilder().subject_name(_name(common_name, organisation)).issuer_name(ca_name)
            .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                           critical=False)
            .sign(ca_key, digest))
    return _pem(leaf) + _pem(ca), _key_pem(leaf_key), _pem(ca)


def algorithm_for(key) -> str:
    """The C2PA signing algorithm for a private key, by its type (and curve)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = _CURVE_ALG.get(key.curve.name)
        if alg is None:
            raise SystemicError(f"provenance.key: EC curve {key.curve.name} cannot sign C2PA "
                                "credentials; use P-256, P-384 or P-521")
        return alg
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise SystemicError(f"provenance.key: a {type(key).__name__} cannot sign C2PA credentials; "
                        "use an EC (P-256/384/521), RSA or Ed25519 key")


def signer_name(cert: x509.Certificate) -> str:
    """A readable name of a certificate's subject: its common name, else organisation, else RFC 4514."""
    for oid in (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME):
        attrs = cert.subject.get_attributes_for_oid(oid)
        if attrs:
            return str(attrs[0].value)
    return cert.subject.rfc4514_string()


def _read(path: str | Path, what: str) -> bytes:
    path = Path(os.path.expanduser(str(path)))
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SystemicError(f"provenance.{what}: cannot read {path} ({exc.strerror or exc}); fix the "
                            f"path or leave provenance.cert and provenance.key unset to sign with the "
                            "local identity") from exc


def load_user_identity(cert_path: str | Path, key_path: str | Path) -> SigningIdentity:
    """The user's PEM chain and key, checked: parseable, unencrypted, matching, currently valid."""
    chain_pem, key_pem = _read(cert_path, "cert"), _read(key_path, "key")
    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise SystemicError(f"provenance.cert: {cert_path} holds no PEM certificate ({exc}); give the "
                            "signer's certificate followed by its CA certificate(s), PEM-encoded") from exc
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as exc:
        raise SystemicError(f"provenance.key: {key_path} is encrypted; give an unencrypted PEM key "
                            "(e.g. `openssl pkey -in KEY -out plain.key`) kept readable only by you") from exc
    except ValueError as exc:
        raise SystemicError(f"provenance.key: {key_path} is not a PEM private key ({exc})") from exc
    leaf = certs[0]
    if leaf.public_key().public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo) != \
            key.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo):
        raise SystemicError(f"provenance.key: {key_path} does not belong to the first certificate of "
                            f"{cert_path}; the chain must start with the signer's own certificate")
    now = dt.datetime.now(dt.timezone.utc)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise SystemicError(f"provenance.cert: {cert_path} is valid only from {leaf.not_valid_before_utc:%Y-%m-%d} "
                            f"to {leaf.not_valid_after_utc:%Y-%m-%d}; renew the certificate")
    alg = algorithm_for(key)
    return SigningIdentity(chain_pem, _key_pem(key), alg, signer_name(leaf), local=False)


def local_identity(folder: Path) -> SigningIdentity:
    """The local identity under ``folder/c2pa/``, made on first use (race-free between processes:
    written to a temp folder and renamed into place; a loser of the race uses the winner's)."""
    target = folder / LOCAL_SUBDIR
    if not (target / LOCAL_KEY).is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".c2pa-tmp-", dir=folder))
        try:
            chain, key, ca = make_ca_and_leaf(LOCAL_SIGNER_NAME, "FixTalk Studio (local, untrusted)")
            (tmp / LOCAL_CHAIN).write_bytes(chain)
            (tmp / LOCAL_CA).write_bytes(ca)
            fd = os.open(tmp / LOCAL_KEY, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(key)
            os.rename(tmp, target)
        except OSError:
            if not (target / LOCAL_KEY).is_file():
                raise SystemicError(f"cannot create the local signing identity under {target}; make the "
                                    "folder writable or set provenance.identity_dir") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    identity = load_user_identity(target / LOCAL_CHAIN, target / LOCAL_KEY)
    return SigningIdentity(identity.chain_pem, identity.key_pem, identity.alg,
                           identity.signer_name, local=True)


def resolve_identity(cert: str | None, key: str | None, identity_dir: str | None = None) -> SigningIdentity:
    """The user's identity when ``cert`` and ``key`` are set, the local one when neither is."""
    if bool(cert) != bool(key):
        missing = "provenance.key" if cert else "provenance.cert"
        raise SystemicError(f"{missing} is not set; give both provenance.cert and provenance.key, or "
                            "neither to sign with the local (untrusted) identity")
    if cert and key:
        return load_user_identity(cert, key)
    return local_identity(config_dir(identity_dir))
