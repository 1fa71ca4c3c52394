"""gosmall keygen, sign and verify-signature against a real registry, checked both ways with Debian's skopeo.

skopeo is the independent verifier: with a `sigstoreSigned` policy and `use-sigstore-attachments: true` it copies
an image gosmall signed and refuses one unsigned or signed with another key; and gosmall verifies what skopeo
signed with a key gosmall generated.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gosmall.digest import Digest
from gosmall.trust.sign import (
    PRIVATE_KEY_PEM_TYPE,
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING,
    generate_key_pair,
    load_private_key,
    load_public_key,
    simple_signing_payload,
)
from tests.conftest import gosmall, make_project

if TYPE_CHECKING:
    from tests.registry_fixture import LocalRegistry

PASSWORD = "correct horse battery staple"
ENV = {"GOSMALL_SIGNING_PASSWORD": PASSWORD, "SOURCE_DATE_EPOCH": ""}
TABLE = """[tool.gosmall]
output = "dist"
pinning = "off"
"""
IMAGE = """
[tool.gosmall.images.{name}]
package = "./go_app"
repository = "{host}/sign/{name}"
tags = ["v1"]
platforms = ["linux/amd64"]
"""
NAMES = ("signed", "unsigned", "stranger", "both", "later")

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs Debian's skopeo")


@dataclass(frozen=True)
class Project:
    root: Path
    host: str
    keys: Path  # cosign.key and cosign.pub, from `gosmall keygen`
    other: Path  # another pair

    def digest(self, name: str) -> str:
        return str(json.loads((self.root / "dist" / name / "report.json").read_text())["digest"])

    def reference(self, name: str) -> str:
        return f"{self.host}/sign/{name}"


def keygen(directory: Path, env: dict[str, str] = ENV) -> Path:
    """A cosign key pair written by `gosmall keygen` into `directory`, protected by `env`'s password."""
    directory.mkdir(parents=True)
    done = gosmall("keygen", cwd=directory, env=env)
    assert done.returncode == 0, done.stderr
    return directory


@pytest.fixture(scope="module")
def project(registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """go_app built and pushed to four repositories of `registry`; two key pairs."""
    base = tmp_path_factory.mktemp("sign")
    root = make_project(base / "project", TABLE + "".join(IMAGE.format(name=name, host=registry.host) for name in NAMES))
    done = gosmall("build-small", "--push", cwd=root, env=ENV)
    assert done.returncode == 0, done.stderr
    return Project(root, registry.host, keygen(base / "keys"), keygen(base / "other"))


GO_CRYPTO = Path("/usr/share/gocode/src/golang.org/x/crypto")  # Debian's golang-golang-x-crypto-dev


@pytest.fixture(scope="session")
def cosign_check(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/cosign_check built with Go and Debian's x/crypto (scrypt, nacl/secretbox): a second implementation of
    cosign's key and signature formats, since Debian's skopeo can neither sign nor verify sigstore signatures."""
    go = shutil.which("go")
    if go is None or not (GO_CRYPTO / "scrypt").is_dir():
        reason = "cosign_check needs go and Debian's golang-golang-x-crypto-dev"
        if os.environ.get("GOSMALL_REQUIRE_DOCKER") == "1":
            pytest.fail(f"{reason}, and GOSMALL_REQUIRE_DOCKER=1 requires it")
        pytest.skip(reason)
    binary = tmp_path_factory.mktemp("cosign_check") / "cosign_check"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GO_CRYPTO.parents[3]), "GOFLAGS": "", "CGO_ENABLED": "0"}
    done = subprocess.run([go, "build", "-o", str(binary), "."], cwd=Path(__file__).resolve().parents[1] / "cosign_check", env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return binary


def _skopeo(project: Project, tmp_path: Path, *args: str, pub: Path | None = None) -> subprocess.CompletedProcess[str]:
    """skopeo with its own policy (sigstoreSigned by `pub` for the registry, else anything) and registries.d."""
    default = [{"type": "insecureAcceptAnything"}]
    transports = {
        "docker": {project.host: [{"type": "sigstoreSigned", "keyPath": str(pub), "signedIdentity": {"type": "matchRepository"}}]}
    }
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": default, "transports": transports if pub else {}}))
    registries = tmp_path / "registries.d"
    registries.mkdir(exist_ok=True)
    (registries / "local.yaml").write_text(f"docker:\n  {project.host}:\n    use-sigstore-attachments: true\n")
    command = ["skopeo", "--policy", str(policy), "--registries.d", str(registries), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def _copy_out(project: Project, tmp_path: Path, image: str, pub: Path) -> subprocess.CompletedProcess[str]:
    target = tmp_path / "copied"
    shutil.rmtree(target, ignore_errors=True)
    return _skopeo(project, tmp_path, "copy", "--src-tls-verify=false", f"docker://{image}", f"dir:{target}", pub=pub)


def _skip_without_sigstore(done: subprocess.CompletedProcess[str]) -> None:
    """Debian builds skopeo 1.9 with its sigstore crypto patched out (disable-sigstore.patch, until Debian ships
    sigstore/sigstore): it still reads and writes sigstore attachments, but neither signs nor verifies."""
    if done.returncode != 0 and "Debian-local change: sigstore disabled" in done.stderr:
        pytest.skip("this skopeo is built without sigstore signing and verification (Debian's disable-sigstore.patch)")


def _sign(project: Project, name: str, key: Path) -> subprocess.CompletedProcess[str]:
    return gosmall("sign", "--key", str(key / "cosign.key"), "--image", name, cwd=project.root, env=ENV)


def _verify(project: Project, image: str, keys: Path) -> subprocess.CompletedProcess[str]:
    return gosmall("verify-signature", "--key", str(keys / "cosign.pub"), image, cwd=project.root, env=ENV)


def _sig_manifest(project: Project, name: str) -> requests.Response:
    tag = project.digest(name).replace(":", "-") + ".sig"
    accept = "application/vnd.oci.image.manifest.v1+json"
    return requests.get(f"http://{project.host}/v2/sign/{name}/manifests/{tag}", headers={"Accept": accept}, timeout=30)


# -- keys -----------------------------------------------------------------------


def test_keygen_writes_cosign_format_keys_that_open_with_the_password(project: Project) -> None:
    private, public = (project.keys / "cosign.key").read_bytes(), (project.keys / "cosign.pub").read_bytes()
    assert private.startswith(f"-----BEGIN {PRIVATE_KEY_PEM_TYPE}-----\n".encode())
    assert public.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert (project.keys / "cosign.key").stat().st_mode & 0o777 == 0o600
    body = json.loads(base64.b64decode(b"".join(private.splitlines()[1:-1])))
    assert body["kdf"]["name"] == "scrypt" and body["kdf"]["params"] == {"N": 65536, "r": 8, "p": 1}
    assert len(base64.b64decode(body["kdf"]["salt"])) == 32
    assert body["cipher"]["name"] == "nacl/secretbox" and len(base64.b64decode(body["cipher"]["nonce"])) == 24
    key = load_private_key(private, PASSWORD.encode(), where="cosign.key")
    # The public file is the private key's public half.
    assert load_public_key(public, where="cosign.pub").public_numbers() == key.public_key().public_numbers()
    with pytest.raises(Exception, match="password does not open"):
        load_private_key(private, b"wrong", where="cosign.key")


def test_keygen_never_overwrites_a_key(project: Project) -> None:
    before = (project.keys / "cosign.key").read_bytes(), (project.keys / "cosign.pub").read_bytes()
    done = gosmall("keygen", cwd=project.keys, env=ENV)
    assert done.returncode == 2
    assert "already exists; gosmall never overwrites a key" in done.stderr
    assert ((project.keys / "cosign.key").read_bytes(), (project.keys / "cosign.pub").read_bytes()) == before


def test_keygen_without_password_or_terminal_writes_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        ["gosmall", "keygen"], cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "GOSMALL_SIGNING_PASSWORD"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "GOSMALL_SIGNING_PASSWORD" in done.stderr
    assert list(tmp_path.iterdir()) == []


# -- gosmall signs, skopeo verifies -----------------------------------------------


def test_gosmall_signature_is_stored_the_cosign_way(project: Project) -> None:
    done = _sign(project, "signed", project.keys)
    assert done.returncode == 0, done.stderr
    digest = project.digest("signed")
    assert done.stdout == f"{project.reference('signed')}:{digest.replace(':', '-')}.sig\n"
    answer = _sig_manifest(project, "signed")
    assert answer.status_code == 200
    manifest = answer.json()
    [layer] = manifest["layers"]
    assert layer["mediaType"] == SIMPLE_SIGNING
    payload = requests.get(f"http://{project.host}/v2/sign/signed/blobs/{layer['digest']}", timeout=30).content
    assert payload == simple_signing_payload(project.reference("signed"), Digest.parse(digest))
    assert json.loads(payload)["critical"]["image"] == {"docker-manifest-digest": digest}
    public = serialization.load_pem_public_key((project.keys / "cosign.pub").read_bytes())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(base64.b64decode(layer["annotations"][SIGNATURE_ANNOTATION]), payload, ec.ECDSA(hashes.SHA256()))
    # Signing again with the same key changes nothing: the signature is deterministic, the layer already there.
    again = _sign(project, "signed", project.keys)
    assert again.returncode == 0, again.stderr
    assert _sig_manifest(project, "signed").content == answer.content


def test_skopeo_reads_a_gosmall_signature_as_a_sigstore_attachment(project: Project, tmp_path: Path, cosign_check: Path) -> None:
    """skopeo's own reader (c/image, use-sigstore-attachments) finds the signature and hands over payload and
    signature; Go's crypto verifies that with cosign.pub."""
    assert _sign(project, "signed", project.keys).returncode == 0
    target = tmp_path / "copied"
    done = _skopeo(project, tmp_path, "copy", "--src-tls-verify=false", f"docker://{project.reference('signed')}:v1", f"dir:{target}")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in target.glob("signature-*")) == ["signature-1"]
    magic, _, body = (target / "signature-1").read_bytes().partition(b"\n")
    assert magic == b"\x00sigstore-json"
    found = json.loads(body)
    assert found["mimeType"] == SIMPLE_SIGNING
    payload = base64.b64decode(found["payload"])
    assert payload == simple_signing_payload(project.reference("signed"), Digest.parse(project.digest("signed")))
    public = serialization.load_pem_public_key((project.keys / "cosign.pub").read_bytes())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(base64.b64decode(found["annotations"][SIGNATURE_ANNOTATION]), payload, ec.ECDSA(hashes.SHA256()))
    (tmp_path / "payload").write_bytes(payload)
    for keys, status in ((project.keys, 0), (project.other, 1)):
        checked = subprocess.run([str(cosign_check), "verify", str(keys / "cosign.pub"), str(tmp_path / "payload"), found["annotations"][SIGNATURE_ANNOTATION]], capture_output=True, text=True, timeout=60)  # fmt: skip
        assert checked.returncode == status, checked.stderr


def test_skopeo_policy_copies_a_gosmall_signed_image_and_refuses_unsigned_and_other_key(project: Project, tmp_path: Path) -> None:
    assert _sign(project, "signed", project.keys).returncode == 0
    assert _sign(project, "stranger", project.other).returncode == 0
    pub = project.keys / "cosign.pub"
    unsigned = _copy_out(project, tmp_path, f"{project.reference('unsigned')}:v1", pub)
    assert unsigned.returncode != 0
    assert "A signature was required, but no signature exists" in unsigned.stderr
    signed = _copy_out(project, tmp_path, f"{project.reference('signed')}:v1", pub)
    _skip_without_sigstore(signed)
    assert signed.returncode == 0, signed.stderr
    assert (tmp_path / "copied" / "manifest.json").is_file()
    by_digest = _copy_out(project, tmp_path, f"{project.reference('signed')}@{project.digest('signed')}", pub)
    assert by_digest.returncode == 0, by_digest.stderr
    stranger = _copy_out(project, tmp_path, f"{project.reference('stranger')}:v1", pub)
    assert stranger.returncode != 0
    assert "signature" in stranger.stderr.lower()
    # And the stranger's own key is what skopeo accepts it with.
    assert _copy_out(project, tmp_path, f"{project.reference('stranger')}:v1", project.other / "cosign.pub").returncode == 0


def test_verify_signature_exit_statuses(project: Project) -> None:
    assert _sign(project, "signed", project.keys).returncode == 0
    ok = _verify(project, f"{project.reference('signed')}:v1", project.keys)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"{project.reference('signed')}@{project.digest('signed')}: signed by ")
    assert _verify(project, f"{project.reference('signed')}@{project.digest('signed')}", project.keys).returncode == 0
    wrong_key = _verify(project, f"{project.reference('signed')}:v1", project.other)
    assert wrong_key.returncode == 1
    assert "signed with another key" in wrong_key.stderr
    missing = _verify(project, f"{project.reference('unsigned')}:v1", project.keys)
    assert missing.returncode == 1
    assert "has no signature" in missing.stderr
    no_such_tag = _verify(project, f"{project.reference('signed')}:nope", project.keys)
    assert no_such_tag.returncode == 2
    no_key = gosmall("verify-signature", "--key", "missing.pub", f"{project.reference('signed')}:v1", cwd=project.root)
    assert no_key.returncode == 2 and "no such key file" in no_key.stderr


def test_a_signature_moved_to_another_repository_does_not_verify(project: Project, tmp_path: Path) -> None:
    """A copy of `signed`'s .sig manifest in `unsigned` is a valid signature of the same digest for another repository."""
    assert _sign(project, "signed", project.keys).returncode == 0
    tag = project.digest("signed").replace(":", "-") + ".sig"
    copied = _skopeo(
        project, tmp_path, "copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--preserve-digests",
        f"docker://{project.reference('signed')}:{tag}", f"docker://{project.reference('both')}:{tag}",
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    done = _verify(project, f"{project.reference('both')}:v1", project.keys)
    assert done.returncode == 1
    assert f"names the repository {project.reference('signed')}, not {project.reference('both')}" in done.stderr
    # Signing it for real adds gosmall's own layer beside the copied one, which verifies.
    assert _sign(project, "both", project.keys).returncode == 0
    assert len(_sig_manifest(project, "both").json()["layers"]) == 2
    assert _verify(project, f"{project.reference('both')}:v1", project.keys).returncode == 0


# -- skopeo signs, gosmall verifies -----------------------------------------------


def test_gosmall_verifies_what_skopeo_signed_with_a_gosmall_key(project: Project, tmp_path: Path) -> None:
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSWORD + "\n")
    target = f"{project.reference('signed')}:by-skopeo"
    done = _skopeo(
        project, tmp_path, "copy", "--dest-tls-verify=false", "--sign-by-sigstore-private-key", str(project.other / "cosign.key"),
        "--sign-passphrase-file", str(passphrase), "--src-tls-verify=false", f"docker://{project.reference('signed')}:v1", f"docker://{target}",
    )  # fmt: skip
    _skip_without_sigstore(done)
    assert done.returncode == 0, done.stderr
    ok = _verify(project, target, project.other)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.endswith(f"as {target}\n")  # skopeo signs the tag it pushed to
    assert _verify(project, target, project.keys).returncode == 1


def test_gosmall_verifies_a_signature_that_go_made_with_a_gosmall_key_and_skopeo_stored(
    project: Project, tmp_path: Path, cosign_check: Path
) -> None:
    """Go's x/crypto opens the cosign.key gosmall wrote and signs; skopeo's own writer (c/image) stores that as a
    sigstore attachment from a dir: copy; gosmall verifies it."""
    written = f"{project.host}/sign/written"
    source = tmp_path / "source"
    pulled = _skopeo(project, tmp_path, "copy", "--src-tls-verify=false", "--remove-signatures", f"docker://{project.reference('signed')}:v1", f"dir:{source}")  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    digest = Digest.of((source / "manifest.json").read_bytes())  # what skopeo will push
    payload = simple_signing_payload(written, digest)
    (tmp_path / "payload").write_bytes(payload)
    (tmp_path / "password").write_text(PASSWORD + "\n")
    signed = subprocess.run([str(cosign_check), "sign", str(project.keys / "cosign.key"), str(tmp_path / "password"), str(tmp_path / "payload")], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    document = {"mimeType": SIMPLE_SIGNING, "payload": base64.b64encode(payload).decode(), "annotations": {SIGNATURE_ANNOTATION: signed.stdout.strip()}}  # fmt: skip
    (source / "signature-1").write_bytes(b"\x00sigstore-json\n" + json.dumps(document).encode())
    pushed = _skopeo(project, tmp_path, "copy", "--dest-tls-verify=false", f"dir:{source}", f"docker://{written}:v1")
    assert pushed.returncode == 0, pushed.stderr
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    sig = requests.get(f"http://{project.host}/v2/sign/written/manifests/{digest.algorithm}-{digest.hex}.sig", headers=accept, timeout=30)
    assert sig.status_code == 200 and [layer["mediaType"] for layer in sig.json()["layers"]] == [SIMPLE_SIGNING]
    ok = _verify(project, f"{written}:v1", project.keys)
    assert ok.returncode == 0, ok.stderr
    assert _verify(project, f"{written}:v1", project.other).returncode == 1


def test_push_sign_pushes_and_signs_in_one_step(project: Project, tmp_path: Path) -> None:
    assert _verify(project, f"{project.reference('later')}:v1", project.other).returncode == 1
    done = gosmall("push", "--image", "later", "--sign", str(project.other / "cosign.key"), cwd=project.root, env=ENV)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{project.reference('later')}@{project.digest('later')}\n"
    assert _verify(project, f"{project.reference('later')}:v1", project.other).returncode == 0


def test_sign_with_the_wrong_password_signs_nothing(project: Project) -> None:
    done = gosmall(
        "sign", "--key", str(project.keys / "cosign.key"), "--image", "stranger", cwd=project.root, env={"GOSMALL_SIGNING_PASSWORD": "no"}
    )
    assert done.returncode == 2
    assert "password does not open this key" in done.stderr


def test_a_key_pair_made_in_process_round_trips() -> None:
    pair = generate_key_pair(b"")
    key = load_private_key(pair.private_pem, b"", where="k")
    assert load_public_key(pair.public_pem, where="p").public_numbers() == key.public_key().public_numbers()
