"""Signatures: keyed, offline, in the format cosign and skopeo already write and verify.

A key pair is cosign's: `cosign.pub` a PKIX PEM of an ECDSA P-256 key,
`cosign.key` its PKCS#8 DER sealed with NaCl secretbox under a key that scrypt
derives from the password, inside a JSON document in a PEM block (sigstore's
`pkg/encrypted` / go-securesystemslib's `encrypted`, with their field names).

A signature is cosign's too: the simple-signing payload (the repository and
the manifest digest it vouches for) is signed with ECDSA over SHA-256, and
stored in the image's own repository as an OCI manifest tagged
`sha256-<hex>.sig`, whose one layer per signature is the payload and whose
layer annotation `dev.cosignproject.cosign/signature` holds the base64 DER
signature. skopeo with `use-sigstore-attachments: true` finds it there.

Signing is deterministic (RFC 6979), so signing the same digest with the same
key again yields the very layer the manifest already has, and nothing changes.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.secret
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..build.built import Build
from ..digest import Digest
from ..errors import COULD_NOT_RUN, FOUND, GosmallError
from ..images.model import MEDIA_CONFIG, MEDIA_MANIFEST, Blob, canonical_json
from ..redact import redact
from ..reference import Reference, ReferenceError, parse_normalized_named
from ..registry.client import (
    INDEX_MEDIA_TYPES,
    MANIFEST_ACCEPT,
    RegistryClient,
    RegistryResolver,
    _fail,
    list_referrers,
    pull_blob,
    pull_manifest,
)
from ..reporter import Reporter
from .provenance import (
    MEDIA_IN_TOTO,
    PREDICATE_ANNOTATION,
    SLSA_PROVENANCE,
    SPDX_DOCUMENT,
    MachineFacts,
    provenance_statement,
    referrer_artifact,
    sbom_statement,
)
from .sbom import sbom_document

PRIVATE_KEY_FILE = "cosign.key"
PUBLIC_KEY_FILE = "cosign.pub"
PASSWORD_VARIABLE = "GOSMALL_SIGNING_PASSWORD"
# cosign 2 writes the SIGSTORE type; cosign 1 (and what it wrote) the COSIGN one, which every version reads.
PRIVATE_KEY_PEM_TYPE = "ENCRYPTED SIGSTORE PRIVATE KEY"
PRIVATE_KEY_PEM_TYPES = (PRIVATE_KEY_PEM_TYPE, "ENCRYPTED COSIGN PRIVATE KEY")
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"
# sigstore's "standard" scrypt parameters, the ones cosign generates keys with.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 65536, 8, 1
# What a key file may ask scrypt for: enough for cosign's legacy, standard and OWASP choices, no more, so a
# tampered file cannot make gosmall spend gigabytes.
SCRYPT_ACCEPTED = frozenset({(32768, 8, 1), (65536, 8, 1), (131072, 8, 1)})
SALT_SIZE = 32
SIGNATURE_ALGORITHM = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
MEDIA_DSSE = "application/vnd.dsse.envelope.v1+json"  # cosign's attestation layers (types.DssePayloadType)
COSIGN_PREDICATE_ANNOTATION = "predicateType"  # the layer annotation `cosign attest` adds
# `verify-attestation --type`: cosign's names for the predicate types gosmall attests.
ATTESTATION_TYPES = {"slsaprovenance1": SLSA_PROVENANCE, "spdx": SPDX_DOCUMENT, "spdxjson": SPDX_DOCUMENT}


@dataclass(frozen=True)
class KeyPair:
    """The two files `gosmall keygen` writes: the encrypted private key and the public key, both PEM."""

    private_pem: bytes
    public_pem: bytes


@dataclass(frozen=True)
class Signature:
    """One simple-signing signature: the payload bytes and the DER ECDSA signature over them."""

    payload: bytes
    signature: bytes

    @property
    def layer(self) -> Blob:
        return Blob(SIMPLE_SIGNING, self.payload)

    @property
    def annotation(self) -> str:
        return base64.b64encode(self.signature).decode()


@dataclass(frozen=True)
class Verified:
    """A signature that checked out: the image it names and the identity its payload claims."""

    repository: str
    digest: Digest
    docker_reference: str


# -- keys -----------------------------------------------------------------------


def generate_key_pair(password: bytes) -> KeyPair:
    """A new ECDSA P-256 key pair, the private half encrypted under `password` the way cosign does."""
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return KeyPair(encrypt_private_key(der, password), public)


def encrypt_private_key(der: bytes, password: bytes) -> bytes:
    """PKCS#8 `der` sealed in sigstore's encrypted-key document (scrypt, then nacl/secretbox), as PEM."""
    salt = secrets.token_bytes(SALT_SIZE)
    nonce = secrets.token_bytes(nacl.secret.SecretBox.NONCE_SIZE)
    box = nacl.secret.SecretBox(_derive(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P))
    sealed = box.encrypt(der, nonce).ciphertext
    document = {
        "kdf": {"name": "scrypt", "params": {"N": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P}, "salt": _b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
        "ciphertext": _b64(sealed),
    }
    return _pem(PRIVATE_KEY_PEM_TYPE, json.dumps(document).encode())


def load_private_key(pem: bytes, password: bytes, *, where: str) -> ec.EllipticCurvePrivateKey:
    """The ECDSA P-256 key in a cosign private key file (either PEM type cosign has written)."""
    kind, body = _unpem(pem, where)
    if kind not in PRIVATE_KEY_PEM_TYPES:
        raise GosmallError(f"{where}: a PEM block of type {kind!r} is not a cosign private key ({PRIVATE_KEY_PEM_TYPE}).")
    try:
        document = json.loads(body)
        kdf, cipher = document["kdf"], document["cipher"]
        params = kdf["params"]
        n, r, p = int(params["N"]), int(params["r"]), int(params["p"])
        salt, nonce = base64.b64decode(kdf["salt"]), base64.b64decode(cipher["nonce"])
        sealed = base64.b64decode(document["ciphertext"])
        names = (kdf["name"], cipher["name"])
    except (ValueError, KeyError, TypeError, RecursionError):
        raise GosmallError(f"{where}: not a cosign encrypted key (its JSON lacks kdf, cipher or ciphertext).") from None
    if names != ("scrypt", "nacl/secretbox") or (n, r, p) not in SCRYPT_ACCEPTED or len(nonce) != nacl.secret.SecretBox.NONCE_SIZE:
        raise GosmallError(f"{where}: encrypted with {names[0]} N={n} r={r} p={p} and {names[1]}, which cosign does not write.")
    try:
        der = nacl.secret.SecretBox(_derive(password, salt, n, r, p)).decrypt(sealed, nonce)
    except nacl.exceptions.CryptoError:
        raise GosmallError(f"{where}: the password does not open this key; check {PASSWORD_VARIABLE}.") from None
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise GosmallError(f"{where}: the key is not ECDSA P-256, the only kind gosmall signs with.")
    return key


def load_public_key(pem: bytes, *, where: str) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise GosmallError(f"{where}: not a PEM public key (`gosmall keygen` writes one as {PUBLIC_KEY_FILE}).") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise GosmallError(f"{where}: the public key is not ECDSA P-256, the only kind gosmall verifies.")
    return key


def check_no_key_pair(directory: Path) -> None:
    """Refuse before any prompt when `directory` already has cosign.key or cosign.pub: no key is ever lost."""
    for path in (directory / PRIVATE_KEY_FILE, directory / PUBLIC_KEY_FILE):
        if os.path.lexists(path):
            raise GosmallError(f"{path} already exists; gosmall never overwrites a key. Move it away to make a new pair.")


def write_key_pair(directory: Path, pair: KeyPair) -> tuple[Path, Path]:
    """cosign.key (mode 0600) and cosign.pub in `directory`; neither may exist, so no key is ever lost."""
    check_no_key_pair(directory)
    private, public = directory / PRIVATE_KEY_FILE, directory / PUBLIC_KEY_FILE
    written: list[Path] = []
    try:
        for path, data, mode in ((private, pair.private_pem, 0o600), (public, pair.public_pem, 0o644)):
            # O_EXCL: a file that appeared meanwhile is not overwritten either.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            written.append(path)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
    except OSError as exc:
        for path in written:
            path.unlink(missing_ok=True)
        raise GosmallError(f"{directory}: could not write the key pair: {exc.strerror}.") from None
    return private, public


def signing_password(*, confirm: bool, environ: Mapping[str, str] = os.environ, prompt: Callable[[str], str] = getpass.getpass) -> bytes:
    """The key's password: GOSMALL_SIGNING_PASSWORD when set (CI), else asked for (twice for a new key)."""
    if PASSWORD_VARIABLE in environ:
        return environ[PASSWORD_VARIABLE].encode()
    try:
        password = prompt("Password for the signing key: ")
        if confirm and prompt("Again, to confirm: ") != password:
            raise GosmallError("The two passwords differ; no key was written.")
    except EOFError:
        raise GosmallError(f"No password: set {PASSWORD_VARIABLE}, or run this on a terminal to be asked.") from None
    return password.encode()


def read_private_key(path: Path, password: bytes) -> ec.EllipticCurvePrivateKey:
    return load_private_key(_read_key_file(path), password, where=str(path))


def read_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    return load_public_key(_read_key_file(path), where=str(path))


def _read_key_file(path: Path) -> bytes:
    if not path.is_file():
        raise GosmallError(f"{path}: no such key file; `gosmall keygen` writes {PRIVATE_KEY_FILE} and {PUBLIC_KEY_FILE}.")
    try:
        return path.read_bytes()[: 2**16]
    except OSError as exc:
        raise GosmallError(f"{path}: cannot read the key: {exc.strerror}.") from None


def _derive(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=256 * r * n + 2**20, dklen=nacl.secret.SecretBox.KEY_SIZE)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _pem(kind: str, body: bytes) -> bytes:
    text = base64.b64encode(body).decode()
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return (f"-----BEGIN {kind}-----\n" + "".join(f"{line}\n" for line in lines) + f"-----END {kind}-----\n").encode()


def _unpem(pem: bytes, where: str) -> tuple[str, bytes]:
    lines = pem.decode("ascii", errors="replace").strip().splitlines()
    if len(lines) < 2 or not lines[0].startswith("-----BEGIN ") or not lines[0].endswith("-----"):
        raise GosmallError(f"{where}: not a PEM file (`gosmall keygen` writes {PRIVATE_KEY_FILE}).")
    kind = lines[0][len("-----BEGIN ") : -len("-----")]
    end = f"-----END {kind}-----"
    if end not in lines:
        raise GosmallError(f"{where}: the PEM block {kind!r} has no end line.")
    body = [line for line in lines[1 : lines.index(end)] if ":" not in line]  # headers such as Proc-Type are skipped
    try:
        return kind, base64.b64decode("".join(body), validate=True)
    except ValueError:
        raise GosmallError(f"{where}: the PEM block {kind!r} is not base64.") from None


# -- payloads and the signature manifest --------------------------------------


def simple_signing_payload(repository: str, digest: Digest) -> bytes:
    """The payload cosign signs: the image's repository and manifest digest, in canonical JSON."""
    return canonical_json(
        {
            "critical": {
                "identity": {"docker-reference": repository},
                "image": {"docker-manifest-digest": str(digest)},
                "type": SIGNATURE_TYPE,
            },
            "optional": None,
        }
    )


def sign_payload(key: ec.EllipticCurvePrivateKey, payload: bytes) -> Signature:
    return Signature(payload, key.sign(payload, SIGNATURE_ALGORITHM))


def signature_tag(digest: Digest) -> str:
    """Where cosign keeps an image's signatures: `sha256:<hex>` becomes the tag `sha256-<hex>.sig`."""
    return f"{digest.algorithm}-{digest.hex}.sig"


@dataclass(frozen=True)
class SignatureLayer:
    """A layer of a signature manifest: the payload's descriptor and its annotations, as the manifest has them."""

    digest: Digest
    size: int
    annotations: tuple[tuple[str, str], ...]
    media_type: str = SIMPLE_SIGNING  # a `.att` manifest's layers are DSSE envelopes

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @property
    def signature(self) -> str:
        return dict(self.annotations).get(SIGNATURE_ANNOTATION, "")


def signature_manifest(layers: tuple[SignatureLayer, ...]) -> tuple[Blob, Blob]:
    """The `.sig` manifest over `layers` and its config, the way cosign writes them (an image of payload layers)."""
    config = Blob(
        MEDIA_CONFIG,
        canonical_json(
            {
                "architecture": "",
                "config": {},
                "created": "0001-01-01T00:00:00Z",
                "history": [{"created": "0001-01-01T00:00:00Z"} for _ in layers],
                "os": "",
                "rootfs": {"diff_ids": [str(layer.digest) for layer in layers], "type": "layers"},
            }
        ),
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config.descriptor().to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    return Blob(MEDIA_MANIFEST, canonical_json(manifest)), config


# -- the registry ---------------------------------------------------------------


def sign_image(client: RegistryClient, repository: Reference, digest: Digest, key: ec.EllipticCurvePrivateKey, reporter: Reporter) -> str:
    """Sign `repository@digest` and put the signature beside it; the `.sig` reference it is under.

    Signatures already there (other keys, other tools) are kept: ours is added as one more layer, unless the very
    same layer is there already.
    """
    from ..publish.push import push_manifest  # push.py builds on the registry module, as this one does

    ref = Reference(repository.domain, repository.path)
    _require_manifest(client, ref, digest)
    signature = sign_payload(key, simple_signing_payload(ref.name, digest))
    ours = SignatureLayer(signature.layer.digest, signature.layer.size, ((SIGNATURE_ANNOTATION, signature.annotation),))
    tag = signature_tag(digest)
    existing = read_signature_layers(client, ref, tag)
    reporter.step(f"{ref.name}@{digest}: signing, as {ref.name}:{tag}")
    if ours in existing:
        reporter.detail(f"{ref.name}:{tag} already holds this signature")
    layers = existing if ours in existing else (*existing, ours)
    manifest, config = signature_manifest(layers)
    push_manifest(client, ref, manifest, (signature.layer, config), (tag,), reporter=reporter, retry_command="`gosmall sign`")
    return f"{ref.name}:{tag}"


def verify_image_signature(client: RegistryClient, image: str, key: ec.EllipticCurvePublicKey) -> Verified:
    """The first signature of `image` (`repo@sha256:…` or `repo:tag`) that `key` made, checked as skopeo's
    `matchRepository` does; GosmallError with code FOUND when there is none, COULD_NOT_RUN when it cannot tell."""
    ref = _image_reference(image)
    digest = Digest.parse(ref.digest) if ref.digest else _resolve(client, ref)
    tag = signature_tag(digest)
    layers = read_signature_layers(client, ref, tag)
    if not layers:
        raise GosmallError(
            f"{ref.name}@{digest} has no signature ({ref.name}:{tag} does not exist). Sign it with `gosmall sign`.", code=FOUND
        )
    problems: list[str] = []
    for layer in layers:
        problem = _check_layer(client, ref, digest, layer, key)
        if isinstance(problem, Verified):
            return problem
        problems.append(problem)
    raise GosmallError(f"{ref.name}@{digest}: no signature checks out with this key: {'; '.join(problems)}.", code=FOUND)


def _check_layer(
    client: RegistryClient, ref: Reference, digest: Digest, layer: SignatureLayer, key: ec.EllipticCurvePublicKey
) -> Verified | str:
    try:
        signature = base64.b64decode(layer.signature, validate=True)
    except ValueError:
        return f"layer {layer.digest}: its {SIGNATURE_ANNOTATION} annotation is not base64"
    if not signature:
        return f"layer {layer.digest}: no {SIGNATURE_ANNOTATION} annotation"
    payload = pull_blob(client, ref, layer.digest, layer.size)
    try:
        key.verify(signature, payload, SIGNATURE_ALGORITHM)
    except InvalidSignature:
        return f"layer {layer.digest}: signed with another key, or altered"
    claimed = _payload_claims(payload)
    if isinstance(claimed, str):
        return f"layer {layer.digest}: {claimed}"
    identity, signed = claimed
    if signed != digest:
        return f"layer {layer.digest}: it signs {signed}, another image"
    try:
        signed_repository = parse_normalized_named(identity).name
    except ReferenceError:
        return f"layer {layer.digest}: its docker-reference {redact(identity, limit=100)!r} is not a reference"
    if signed_repository != ref.name:
        return f"layer {layer.digest}: it names the repository {signed_repository}, not {ref.name}"
    return Verified(ref.name, digest, identity)


def _payload_claims(payload: bytes) -> tuple[str, Digest] | str:
    """(docker-reference, docker-manifest-digest) of a simple-signing payload, or what is wrong with it."""
    try:
        document = json.loads(payload)
        critical = document["critical"]
        identity, image, kind = critical["identity"]["docker-reference"], critical["image"]["docker-manifest-digest"], critical["type"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return "its payload is not a simple-signing document"
    if kind != SIGNATURE_TYPE or not isinstance(identity, str) or not isinstance(image, str):
        return f"its payload's type is {redact(str(kind), limit=100)!r}, not {SIGNATURE_TYPE!r}"
    try:
        return identity, Digest.parse(image)
    except ValueError:
        return "its payload's docker-manifest-digest is not a sha256 digest"


def read_signature_layers(
    client: RegistryClient, ref: Reference, tag: str, *, media_types: tuple[str, ...] | None = (SIMPLE_SIGNING,)
) -> tuple[SignatureLayer, ...]:
    """The layers of `media_types` (None: every layer) of the `.sig` or `.att` manifest under `tag`; none when there
    is no such tag."""
    scope = f"repository:{ref.path}:pull"
    answer = client.request("GET", ref.domain, f"/v2/{ref.path}/manifests/{tag}", scope, headers={"Accept": MANIFEST_ACCEPT})
    if answer.status_code == 404:
        return ()
    if answer.status_code != 200:
        raise GosmallError(_fail(ref, f"getting signature manifest {tag}", answer).message, code=COULD_NOT_RUN)
    try:
        document = json.loads(answer.content)
        layers = tuple(
            _signature_layer(layer) for layer in document["layers"] if media_types is None or layer.get("mediaType") in media_types
        )
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise GosmallError(f"{ref.name}:{tag} is not a signature manifest (no layers of {SIMPLE_SIGNING}).") from None
    return layers


def _signature_layer(layer: Mapping[str, Any]) -> SignatureLayer:
    annotations = layer.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
        raise TypeError("annotations")
    size = layer["size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise TypeError("size")
    media_type = layer.get("mediaType", SIMPLE_SIGNING)
    if not isinstance(media_type, str):
        raise TypeError("mediaType")
    return SignatureLayer(Digest.parse(layer["digest"]), size, tuple(sorted(annotations.items())), media_type)


def _require_manifest(client: RegistryClient, ref: Reference, digest: Digest) -> None:
    scope = f"repository:{ref.path}:pull"
    answer = client.request("HEAD", ref.domain, f"/v2/{ref.path}/manifests/{digest}", scope, headers={"Accept": MANIFEST_ACCEPT})
    if answer.status_code == 404:
        raise GosmallError(f"{ref.name}@{digest} is not in the registry, so there is nothing to sign; run `gosmall push` first.")
    if answer.status_code != 200:
        raise _fail(ref, f"looking up manifest {digest}", answer)


def _resolve(client: RegistryClient, ref: Reference) -> Digest:
    try:
        return RegistryResolver(client).resolve(ref)
    except GosmallError as exc:
        raise GosmallError(exc.message, code=COULD_NOT_RUN) from None


def _image_reference(image: str) -> Reference:
    try:
        ref = parse_normalized_named(image)
    except ReferenceError as exc:
        raise GosmallError(exc.message) from None
    if ref.digest is None and ref.tag is None:
        raise GosmallError(f"{image!r} names no image: give repo@sha256:… or repo:tag.")
    return ref


# -- attestations: in-toto statements in DSSE envelopes, as cosign attests ------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding, the bytes a DSSE signature covers:
    "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, lengths in ASCII decimal bytes."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def dsse_envelope(key: ec.EllipticCurvePrivateKey, payload_type: str, payload: bytes) -> bytes:
    """A DSSE envelope of `payload`, signed over its PAE with ECDSA P-256 (SHA-256, deterministic), in the field
    order sigstore's envelope has (payloadType, payload, signatures[keyid, sig])."""
    signature = key.sign(pae(payload_type, payload), SIGNATURE_ALGORITHM)
    envelope = {"payloadType": payload_type, "payload": _b64(payload), "signatures": [{"keyid": "", "sig": _b64(signature)}]}
    return json.dumps(envelope, separators=(",", ":")).encode()


def attestation_tag(digest: Digest) -> str:
    """Where cosign keeps an image's attestations: `sha256:<hex>` becomes the tag `sha256-<hex>.att`."""
    return f"{digest.algorithm}-{digest.hex}.att"


@dataclass(frozen=True)
class Attested:
    """An attestation that checked out: the image, what it attests, and what it says of the source and builder."""

    repository: str
    digest: Digest
    predicate_type: str
    commit: str
    builder: str
    found_in: str  # the `.att` tag or the referrer it was read from

    def to_json(self) -> dict[str, Any]:
        return {
            "verified": True,
            "image": f"{self.repository}@{self.digest}",
            "digest": str(self.digest),
            "predicate_type": self.predicate_type,
            "commit": self.commit,
            "builder": self.builder,
            "found_in": self.found_in,
        }


def attest_image(
    client: RegistryClient, repository: Reference, build: Build, key: ec.EllipticCurvePrivateKey, facts: MachineFacts, reporter: Reporter
) -> str:
    """Sign the build's provenance and SBOM statements as DSSE envelopes and put them where cosign looks (`.att`,
    one layer each, other layers kept) and as OCI referrers of the image; the `.att` reference.

    Signing is deterministic and the statements hold no clock, so attesting one build again adds nothing.
    """
    from ..publish.push import push_artifacts, push_manifest  # push.py builds on the registry module, as this one does

    ref = Reference(repository.domain, repository.path)
    digest = build.digest
    _require_manifest(client, ref, digest)
    statements = (
        (SLSA_PROVENANCE, provenance_statement(build, facts)),
        (SPDX_DOCUMENT, sbom_statement(build, sbom_document(build))),
    )
    envelopes = tuple((kind, Blob(MEDIA_DSSE, dsse_envelope(key, MEDIA_IN_TOTO, statement))) for kind, statement in statements)
    tag = attestation_tag(digest)
    reporter.step(f"{ref.name}@{digest}: attesting its provenance and SBOM, as {ref.name}:{tag} and as referrers")
    existing = read_signature_layers(client, ref, tag, media_types=None)
    ours = tuple(
        SignatureLayer(
            blob.digest, blob.size, tuple(sorted({SIGNATURE_ANNOTATION: "", COSIGN_PREDICATE_ANNOTATION: kind}.items())), MEDIA_DSSE
        )
        for kind, blob in envelopes
    )
    added = tuple(layer for layer in ours if layer not in existing)
    if added:
        manifest, config = signature_manifest((*existing, *added))
        blobs = tuple(blob for _, blob in envelopes if any(layer.digest == blob.digest for layer in added))
        push_manifest(client, ref, manifest, (*blobs, config), (tag,), reporter=reporter, retry_command="`gosmall sign`")
    else:
        reporter.detail(f"{ref.name}:{tag} already holds these attestations")
    artifacts = tuple(referrer_artifact(build, blob, MEDIA_DSSE, kind) for kind, blob in envelopes)
    push_artifacts(client, ref, digest, artifacts, reporter, retry_command="`gosmall sign`")
    return f"{ref.name}:{tag}"


def verify_image_attestation(client: RegistryClient, image: str, key: ec.EllipticCurvePublicKey, predicate_type: str) -> Attested:
    """The first attestation of `predicate_type` for `image` that `key` signed and whose subject is the image, read
    from cosign's `.att` tag and from the image's referrers; GosmallError with code FOUND when there is none (each
    candidate's problem named), COULD_NOT_RUN when it cannot tell.

    An index joined by `gosmall index` from platform jobs has no statement of its own: each platform job attested its
    manifest. Such an index verifies when every one of its platform manifests does, each against its own digest.
    """
    ref = _image_reference(image)
    digest = Digest.parse(ref.digest) if ref.digest else _resolve(client, ref)
    try:
        return _verify_digest(client, ref, digest, key, predicate_type)
    except GosmallError as whole:
        if whole.code != FOUND:
            raise
        platforms = _index_manifests(client, ref, digest)
        if not platforms:
            raise
        attested = []
        for platform in platforms:
            try:
                attested.append(_verify_digest(client, ref, platform, key, predicate_type))
            except GosmallError as one:
                if one.code != FOUND:
                    raise
                raise GosmallError(f"{whole.message} Nor is each platform of the index attested: {one.message}", code=FOUND) from None
        first = attested[0]
        commits = sorted({a.commit for a in attested})
        return Attested(
            ref.name, digest, predicate_type, ", ".join(commits), first.builder, f"each of its {len(attested)} platform manifests"
        )


def _verify_digest(client: RegistryClient, ref: Reference, digest: Digest, key: ec.EllipticCurvePublicKey, predicate_type: str) -> Attested:
    candidates = _attestation_candidates(client, ref, digest, predicate_type)
    if not candidates:
        raise GosmallError(
            f"{ref.name}@{digest} has no {predicate_type} attestation (neither {ref.name}:{attestation_tag(digest)} nor a "
            "referrer holds one). Attest it with `gosmall sign` or `gosmall push --sign`.",
            code=FOUND,
        )
    problems: list[str] = []
    for where, envelope in candidates:
        checked = _check_envelope(envelope, key, digest, predicate_type)
        if isinstance(checked, str):
            problems.append(f"{where}: {checked}")
            continue
        commit, builder = checked
        return Attested(ref.name, digest, predicate_type, commit, builder, where)
    raise GosmallError(f"{ref.name}@{digest}: no {predicate_type} attestation checks out with this key: {'; '.join(problems)}.", code=FOUND)


def _index_manifests(client: RegistryClient, ref: Reference, digest: Digest) -> list[Digest]:
    """The manifests an index lists, by digest (the registry's bytes checked against it); none for a manifest."""
    data, media_type = pull_manifest(client, ref, str(digest))
    try:
        document = json.loads(data)
        if media_type not in INDEX_MEDIA_TYPES and document.get("mediaType") not in INDEX_MEDIA_TYPES:
            return []
        return [Digest.parse(m["digest"]) for m in document["manifests"]]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return []


def _attestation_candidates(client: RegistryClient, ref: Reference, digest: Digest, predicate_type: str) -> list[tuple[str, bytes]]:
    """(where, envelope bytes) of every DSSE envelope that may attest `predicate_type`, `.att` layers first."""
    found: list[tuple[str, bytes]] = []
    seen: set[Digest] = set()
    tag = attestation_tag(digest)
    for layer in read_signature_layers(client, ref, tag, media_types=(MEDIA_DSSE,)):
        said = dict(layer.annotations).get(COSIGN_PREDICATE_ANNOTATION, predicate_type)
        if said == predicate_type and layer.digest not in seen:
            seen.add(layer.digest)
            found.append((f"{ref.name}:{tag} layer {layer.digest}", pull_blob(client, ref, layer.digest, layer.size)))
    try:
        listed = list_referrers(client, ref, digest)
    except GosmallError as exc:
        raise GosmallError(exc.message, code=COULD_NOT_RUN) from None
    for entry in listed.manifests:
        annotations = entry.get("annotations") or {}
        said = annotations.get(PREDICATE_ANNOTATION, predicate_type) if isinstance(annotations, dict) else predicate_type
        if entry.get("artifactType") != MEDIA_DSSE or said != predicate_type:
            continue
        manifest, _ = pull_manifest(client, ref, str(entry["digest"]))
        try:
            layers = [_signature_layer(layer) for layer in json.loads(manifest)["layers"] if layer.get("mediaType") == MEDIA_DSSE]
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            continue
        for layer in layers:
            if layer.digest not in seen:
                seen.add(layer.digest)
                found.append((f"referrer {entry['digest']}", pull_blob(client, ref, layer.digest, layer.size)))
    return found


def _check_envelope(data: bytes, key: ec.EllipticCurvePublicKey, digest: Digest, predicate_type: str) -> tuple[str, str] | str:
    """(commit, builder) the statement names, or what is wrong: not DSSE, a bad signature, another type or subject."""
    try:
        envelope = json.loads(data)
        payload_type, payload = envelope["payloadType"], base64.b64decode(envelope["payload"], validate=True)
        signatures = [base64.b64decode(s["sig"], validate=True) for s in envelope["signatures"]]
    except (ValueError, KeyError, TypeError, RecursionError):
        return "not a DSSE envelope"
    if payload_type != MEDIA_IN_TOTO:
        return f"its payloadType is {redact(str(payload_type), limit=100)!r}, not {MEDIA_IN_TOTO}"
    signed = pae(payload_type, payload)
    if not any(_verifies(key, signature, signed) for signature in signatures):
        return "bad signature: signed with another key, or altered"
    try:
        statement = json.loads(payload)
        kind, subjects = statement["predicateType"], statement["subject"]
        hexes = [str(s["digest"].get(digest.algorithm, "")) for s in subjects]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return "its payload is not an in-toto statement"
    if kind != predicate_type:
        return f"it attests {redact(str(kind), limit=100)!r}, not {predicate_type}"
    if digest.hex not in hexes:
        named = ", ".join(f"{digest.algorithm}:{h}" for h in hexes if h) or "no sha256 digest"
        return f"its subject is {redact(named, limit=200)}, not this image"
    return _statement_origin(statement)


def _verifies(key: ec.EllipticCurvePublicKey, signature: bytes, signed: bytes) -> bool:
    try:
        key.verify(signature, signed, SIGNATURE_ALGORITHM)
    except InvalidSignature:
        return False
    return True


def _statement_origin(statement: Mapping[str, Any]) -> tuple[str, str]:
    """The source commit and the builder a provenance (or an SPDX document) names; "" where it names none."""
    predicate = statement.get("predicate") or {}
    commit = builder = ""
    if isinstance(predicate, dict) and "buildDefinition" in predicate:
        for dependency in predicate.get("buildDefinition", {}).get("resolvedDependencies") or []:
            if isinstance(dependency, dict) and isinstance(dependency.get("digest"), dict) and dependency["digest"].get("gitCommit"):
                commit = str(dependency["digest"]["gitCommit"])
                break
        builder = str(((predicate.get("runDetails") or {}).get("builder") or {}).get("id", ""))
    elif isinstance(predicate, dict):
        creators = (predicate.get("creationInfo") or {}).get("creators") or []
        builder = ", ".join(str(c) for c in creators)
        source = next((p.get("sourceInfo", "") for p in predicate.get("packages") or [] if p.get("SPDXID") == "SPDXRef-Image"), "")
        words = str(source).split()
        commit = words[words.index("revision") + 1] if "revision" in words[:-1] else ""
    return redact(commit, limit=100), redact(builder, limit=200)
