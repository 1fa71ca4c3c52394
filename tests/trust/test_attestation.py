"""gosmall's DSSE attestations checked by an independent verifier, written here from the DSSE and in-toto specs.

Nothing of gosmall's verifying code is used: the envelope is read from the registry with plain HTTP, PAE is built
as DSSE's protocol.md defines it, the ECDSA P-256 signature is checked with `cryptography` (and, a second time, by
Go's crypto/ecdsa through tests/cosign_check), and the statement's subject is held to the image's digest.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import gosmall, make_project
from tests.trust.test_sign import (
    cosign_check,  # noqa: F401 - the Go verifier, a fixture
    keygen,
)

if TYPE_CHECKING:
    from tests.registry_fixture import LocalRegistry

ENV = {"GOSMALL_SIGNING_PASSWORD": "attestation test password", "SOURCE_DATE_EPOCH": ""}
IN_TOTO = "application/vnd.in-toto+json"
SLSA = "https://slsa.dev/provenance/v1"


class Refused(Exception):
    """What the independent verifier says when an envelope does not attest the image."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 protocol.md: PAE(type, body) = "DSSEv1" + SP + LEN(type) + SP + type + SP + LEN(body) + SP + body."""
    kind = payload_type.encode("utf-8")
    return b" ".join([b"DSSEv1", str(len(kind)).encode("ascii"), kind, str(len(payload)).encode("ascii"), payload])


def verify_envelope(envelope: dict[str, Any], key: ec.EllipticCurvePublicKey, image_digest: str, predicate_type: str) -> dict[str, Any]:
    """The statement, when one signature verifies over PAE, the payload is an in-toto statement of `predicate_type`,
    and a subject's sha256 is the image's; Refused otherwise."""
    if envelope.get("payloadType") != IN_TOTO:
        raise Refused("payloadType")
    payload = base64.b64decode(envelope["payload"])
    signed = pae(envelope["payloadType"], payload)
    for signature in envelope.get("signatures", []):
        try:
            key.verify(base64.b64decode(signature["sig"]), signed, ec.ECDSA(hashes.SHA256()))
            break
        except InvalidSignature:
            continue
    else:
        raise Refused("signature")
    statement = json.loads(payload)
    if statement.get("_type") != "https://in-toto.io/Statement/v1" or statement.get("predicateType") != predicate_type:
        raise Refused("type")
    algorithm, hexdigest = image_digest.split(":", 1)
    if not any(subject.get("digest", {}).get(algorithm) == hexdigest for subject in statement.get("subject", [])):
        raise Refused("subject")
    return statement


@dataclass(frozen=True)
class Signed:
    root: Path
    host: str
    keys: Path
    other: Path

    def digest(self, name: str) -> str:
        return str(json.loads((self.root / "dist" / name / "report.json").read_text())["digest"])

    def envelopes(self, name: str) -> dict[str, dict[str, Any]]:
        """predicateType -> the DSSE envelope, read from cosign's `.att` tag over plain HTTP."""
        base = f"http://{self.host}/v2/attest/{name}"
        tag = self.digest(name).replace(":", "-") + ".att"
        manifest = requests.get(f"{base}/manifests/{tag}", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}, timeout=30)
        assert manifest.status_code == 200, manifest.text
        out = {}
        for layer in manifest.json()["layers"]:
            blob = requests.get(f"{base}/blobs/{layer['digest']}", timeout=30).content
            assert "sha256:" + hashlib.sha256(blob).hexdigest() == layer["digest"]
            out[layer["annotations"]["predicateType"]] = json.loads(blob)
        return out

    def public_key(self, keys: Path) -> ec.EllipticCurvePublicKey:
        key = serialization.load_pem_public_key((keys / "cosign.pub").read_bytes())
        assert isinstance(key, ec.EllipticCurvePublicKey)
        return key


@pytest.fixture(scope="module")
def signed(registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory) -> Signed:
    base = tmp_path_factory.mktemp("attest")
    table = "".join(
        f'[tool.gosmall.images.{name}]\npackage = "./go_app"\nrepository = "{registry.host}/attest/{name}"\ntags = ["v1"]\n'
        f'platforms = ["linux/amd64"]\nenv = {{ IMAGE = "{name}" }}\n\n'
        for name in ("app", "twin")
    )
    root = make_project(base / "project", '[tool.gosmall]\noutput = "dist"\npinning = "off"\n\n' + table)
    found = Signed(root, registry.host, keygen(base / "keys", ENV), keygen(base / "other", ENV))
    done = gosmall("build-small", "--push", "--sign", str(found.keys / "cosign.key"), cwd=root, env=ENV)
    assert done.returncode == 0, done.stderr
    return found


def test_pae_is_the_dsse_spec_vector() -> None:
    """protocol.md's worked example, against both this verifier's PAE and gosmall's."""
    from gosmall.trust.sign import pae as gosmall_pae

    expected = b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert pae("http://example.com/HelloWorld", b"hello world") == expected
    assert gosmall_pae("http://example.com/HelloWorld", b"hello world") == expected


def test_the_independent_verifier_accepts_both_envelopes(signed: Signed) -> None:
    envelopes = signed.envelopes("app")
    assert sorted(envelopes) == [SLSA, "https://spdx.dev/Document"]
    statement = verify_envelope(envelopes[SLSA], signed.public_key(signed.keys), signed.digest("app"), SLSA)
    assert statement["predicate"]["buildDefinition"]["buildType"] == "urn:gosmall:buildtype:go-scratch-image:v1"
    sbom = verify_envelope(
        envelopes["https://spdx.dev/Document"], signed.public_key(signed.keys), signed.digest("app"), "https://spdx.dev/Document"
    )
    assert (
        json.dumps(sbom["predicate"], sort_keys=True, separators=(",", ":")).encode()
        == (signed.root / "dist" / "app" / "sbom.spdx.json").read_bytes()
    )


def test_gos_crypto_verifies_the_signature_over_pae(signed: Signed, tmp_path: Path, cosign_check: Path) -> None:  # noqa: F811
    envelope = signed.envelopes("app")[SLSA]
    (tmp_path / "pae").write_bytes(pae(envelope["payloadType"], base64.b64decode(envelope["payload"])))
    done = subprocess.run([str(cosign_check), "verify", str(signed.keys / "cosign.pub"), str(tmp_path / "pae"), envelope["signatures"][0]["sig"]], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = subprocess.run([str(cosign_check), "verify", str(signed.other / "cosign.pub"), str(tmp_path / "pae"), envelope["signatures"][0]["sig"]], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1, done.stderr


def test_one_byte_changed_in_the_statement_is_refused(signed: Signed) -> None:
    envelope = signed.envelopes("app")[SLSA]
    payload = bytearray(base64.b64decode(envelope["payload"]))
    at = payload.index(b'"gitCommit":"') + len(b'"gitCommit":"')
    payload[at] = ord("0") if payload[at] != ord("0") else ord("1")
    altered = {**envelope, "payload": base64.b64encode(bytes(payload)).decode()}
    with pytest.raises(Refused, match="signature"):
        verify_envelope(altered, signed.public_key(signed.keys), signed.digest("app"), SLSA)


def test_another_key_is_refused(signed: Signed) -> None:
    with pytest.raises(Refused, match="signature"):
        verify_envelope(signed.envelopes("app")[SLSA], signed.public_key(signed.other), signed.digest("app"), SLSA)


def test_a_subject_that_is_not_the_image_is_refused(signed: Signed) -> None:
    """app's envelope is signed by the right key, but names app, not twin."""
    with pytest.raises(Refused, match="subject"):
        verify_envelope(signed.envelopes("app")[SLSA], signed.public_key(signed.keys), signed.digest("twin"), SLSA)
    # and a statement about another digest, signed by the right key through gosmall's own signer, is refused too
    from gosmall.trust.sign import dsse_envelope, load_private_key

    key = load_private_key((signed.keys / "cosign.key").read_bytes(), ENV["GOSMALL_SIGNING_PASSWORD"].encode(), where="cosign.key")
    statement = json.loads(base64.b64decode(signed.envelopes("twin")[SLSA]["payload"]))
    envelope = json.loads(dsse_envelope(key, IN_TOTO, json.dumps(statement).encode()))
    assert verify_envelope(envelope, signed.public_key(signed.keys), signed.digest("twin"), SLSA)
    with pytest.raises(Refused, match="subject"):
        verify_envelope(envelope, signed.public_key(signed.keys), signed.digest("app"), SLSA)


def test_gosmall_verify_attestation_agrees(signed: Signed) -> None:
    image = f"{signed.host}/attest/app@{signed.digest('app')}"
    ok = gosmall("verify-attestation", "--key", str(signed.keys / "cosign.pub"), image, cwd=signed.root, env=ENV)
    assert ok.returncode == 0, ok.stderr
    refused = gosmall("verify-attestation", "--key", str(signed.other / "cosign.pub"), image, cwd=signed.root, env=ENV)
    assert refused.returncode == 1
