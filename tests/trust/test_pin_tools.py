"""verify-pins and pin as the standalone tools they are, run as a user runs them: the console script.

Each test reproduces an item of issue 9 the way it was found: an infra repository
without pyproject.toml, a `[tool.gosmall]` table without images, exit statuses a CI
script can branch on, a symlinked Dockerfile, registries that drip, stay silent or
echo credentials, and the pre-commit hook.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gosmall.digest import Digest
from gosmall.reference import Reference
from gosmall.registry.client import RegistryClient, RegistryResolver
from gosmall.trust.pinning import RESOLVE_WORKERS, pin_references
from tests.conftest import REPO, git_commit, gosmall
from tests.registry.test_registry import make_layout
from tests.registry_fixture import bearer_registry, drip_headers, http_server, never_answer, push_layout, raw_server

if TYPE_CHECKING:
    from tests.registry_fixture import LocalRegistry

pytest_plugins = ["tests.registry_fixture"]

PINNED = "@sha256:" + "a" * 64
# A loopback port nothing listens on: a reference that must never be resolved fails fast
# there instead of reaching a real registry.
NOBODY = "127.0.0.1:9"


def _repo(root: Path, files: dict[str, str], *, git: bool = True) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    if git:
        git_commit(root)
    return root


# -- anywhere: no pyproject.toml, or a [tool.gosmall] without images ----------------


def test_verify_pins_in_an_infra_repo_without_pyproject(tmp_path: Path) -> None:
    root = _repo(
        tmp_path / "infra",
        {
            "images/api/Dockerfile": "FROM golang:1.22 AS build\nFROM gcr.io/distroless/static\n",
            "k8s/deploy.yaml": f"kind: Pod\nspec:\n  containers:\n    - image: nginx:1.27{PINNED}\n",
            "README.md": "FROM alpine:3 is not a Dockerfile line here\n",
        },
    )
    found = gosmall("verify-pins", cwd=root)
    assert found.returncode == 1, found.stderr
    assert found.stdout.splitlines() == [
        "images/api/Dockerfile:1:6: golang:1.22: not pinned by digest",
        "images/api/Dockerfile:2:6: gcr.io/distroless/static: not pinned by digest",
    ]
    assert "pyproject.toml" not in found.stderr

    (root / "images/api/Dockerfile").write_text(f"FROM golang:1.22{PINNED} AS build\nFROM gcr.io/distroless/static:v1{PINNED}\n")
    clean = gosmall("verify-pins", cwd=root)
    assert clean.returncode == 0 and clean.stdout == ""
    assert "all 3 image reference(s) in 2 file(s) are pinned by digest" in clean.stderr

    # Run from a subdirectory: the git work tree is still what is scanned.
    assert gosmall("verify-pins", cwd=root / "k8s").returncode == 0
    # Outside git, the directory itself is scanned.
    plain = _repo(tmp_path / "plain", {"Dockerfile": "FROM alpine:3\n"}, git=False)
    outside_git = gosmall("verify-pins", "--format", "json", cwd=plain)
    assert outside_git.returncode == 1
    assert [f["reference"] for f in json.loads(outside_git.stdout)] == ["alpine:3"]


def test_verify_pins_with_a_gosmall_table_but_no_images_uses_its_output(tmp_path: Path) -> None:
    root = _repo(
        tmp_path / "svc",
        {
            "pyproject.toml": '[project]\nname = "svc"\n\n[tool.gosmall]\noutput = "out"\n',
            "Dockerfile": f"FROM alpine:3{PINNED}\n",
            "out/Dockerfile": "FROM busybox\n",  # gosmall's output is not the project's source
        },
    )
    done = gosmall("verify-pins", cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    # The same file outside the output directory is found.
    (root / "copy").mkdir()
    shutil.copy(root / "out/Dockerfile", root / "copy/Dockerfile")
    found = gosmall("verify-pins", cwd=root)
    assert found.returncode == 1 and found.stdout == "copy/Dockerfile:1:6: busybox: not pinned by digest\n"


# -- exit statuses: 0 all pinned, 1 found something, 2 could not run ------------------


@pytest.mark.parametrize(
    ("args", "pyproject", "expected"),
    [
        (("verify-pins", "--bogus"), None, "No idea what '--bogus' is!"),
        (("verify-pins", "--format", "xml"), None, "--format 'xml' is not known"),
        (("verify-pins", "--format", "json", "no/such/Dockerfile"), None, "no/such/Dockerfile: no such file or directory"),
        (("verify-pins", "--format", "json"), '[tool.gosmall]\npinnning = "warn"\n', "[tool.gosmall] pinnning: is not a known key"),
        (("verify-pins", "--format", "json"), "[tool.gosmall\n", "is not valid TOML"),
        (("pin", "--check", "--timeout", "soon"), None, "a flag's value is not of its type"),
        (("pin", "--check", "--timeout", "0"), None, "--timeout 0: must be a positive number of seconds"),
        (("pin", "--check", "missing.Dockerfile"), None, "missing.Dockerfile: no such file or directory"),
    ],
)
def test_could_not_run_is_status_2_and_nothing_on_stdout(
    tmp_path: Path, args: tuple[str, ...], pyproject: str | None, expected: str
) -> None:
    _repo(tmp_path, {"Dockerfile": "FROM alpine:3\n", **({"pyproject.toml": pyproject} if pyproject else {})}, git=False)
    done = gosmall(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert expected in done.stderr and done.stderr.startswith("gosmall: error: ")
    assert "Traceback" not in done.stderr


def test_exit_statuses_are_in_the_help() -> None:
    for name, found in (("verify-pins", "1 unpinned or invalid references"), ("pin", "1 references are left unpinned")):
        shown = gosmall("--help", name, cwd=REPO)
        assert shown.returncode == 0
        text = " ".join(shown.stdout.split())
        assert "Exit status: 0" in text and found in text
        assert "2 it could not run (bad flag, bad config, missing path" in text
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "0 when every reference is pinned, 1 when" in readme and "2 when it could not run" in readme


# -- files: links followed only inside the project, never a FIFO ----------------------


def test_pin_edits_a_symlinked_dockerfile_once_and_keeps_the_link(registry: LocalRegistry, tmp_path: Path) -> None:
    digest = push_layout(make_layout(tmp_path / "oci", content=b"shared\n"), f"{registry.host}/tools/shared:1", client=RegistryClient())
    root = _repo(tmp_path / "repo", {"shared/base.Dockerfile": f"FROM {registry.host}/tools/shared:1 AS base\n"}, git=False)
    (root / "svc").mkdir()
    (root / "svc" / "Dockerfile").symlink_to("../shared/base.Dockerfile")
    git_commit(root)

    # The link and its target are one file: one finding, under the file's own name.
    found = gosmall("verify-pins", cwd=root)
    assert found.returncode == 1
    assert found.stdout == f"shared/base.Dockerfile:1:6: {registry.host}/tools/shared:1: not pinned by digest\n"

    pinned = gosmall("pin", cwd=root)
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    assert (root / "svc" / "Dockerfile").is_symlink()
    assert os.readlink(root / "svc" / "Dockerfile") == "../shared/base.Dockerfile"
    assert (root / "shared/base.Dockerfile").read_text() == f"FROM {registry.host}/tools/shared:1@{digest} AS base\n"
    assert gosmall("verify-pins", cwd=root).returncode == 0

    # Named through the link, as a user (or pre-commit) may: still the target, once.
    (root / "shared/base.Dockerfile").write_text(f"FROM {registry.host}/tools/shared:1 AS base\n")
    through_link = gosmall("pin", "svc/Dockerfile", cwd=root)
    assert through_link.returncode == 0, through_link.stdout + through_link.stderr
    assert through_link.stdout.startswith("svc/Dockerfile:1:6: pinned ")
    assert (root / "svc" / "Dockerfile").is_symlink()
    assert (root / "shared/base.Dockerfile").read_text().count("@sha256:") == 1


def test_a_link_out_of_the_project_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "Dockerfile"
    outside.parent.mkdir()
    text = f"FROM {NOBODY}/team/app:1\n"
    outside.write_text(text)
    root = _repo(tmp_path / "repo", {"Dockerfile": f"FROM alpine:3{PINNED}\n"}, git=False)
    (root / "svc").mkdir()
    (root / "svc" / "Dockerfile").symlink_to(outside)
    git_commit(root)

    refused = f"svc/Dockerfile:1:1: cannot read file: it is a symbolic link to {outside}, outside the project ({root})"
    found = gosmall("verify-pins", cwd=root)
    assert found.returncode == 1 and found.stdout.startswith(refused)
    for args in (("pin",), ("pin", "svc/Dockerfile")):
        done = gosmall(*args, cwd=root)
        assert done.returncode == 1 and done.stdout.startswith(refused), done.stdout + done.stderr
        assert "never follows a link out of the project" in done.stdout
        assert outside.read_text() == text and (root / "svc" / "Dockerfile").is_symlink()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_reported_not_opened(tmp_path: Path) -> None:
    _repo(tmp_path, {"compose.yaml": f"services:\n  a:\n    image: redis:7{PINNED}\n"}, git=False)
    os.mkfifo(tmp_path / "Dockerfile")
    for args in (("verify-pins",), ("verify-pins", "Dockerfile")):
        done = gosmall(*args, cwd=tmp_path, timeout=60)  # before: blocked for ever in open()
        assert done.returncode == 1
        assert (
            done.stdout
            == "Dockerfile:1:1: cannot read file: it is not a regular file (a FIFO, socket or device); gosmall reads only files\n"
        )


# -- registries that hang: a deadline per request and per run, several at once ---------


def test_pin_check_stops_at_the_deadline_when_a_registry_drips_headers(tmp_path: Path) -> None:
    # The registry: one header line every 5 s kept `pin --check` running past 150 s.
    with raw_server(drip_headers(every=5.0)) as server:
        _repo(tmp_path, {"Dockerfile": f"FROM {server.host}/team/app:1\n"}, git=False)
        started = time.monotonic()
        done = gosmall("pin", "--check", "--timeout", "12", cwd=tmp_path, timeout=300)
        took = time.monotonic() - started
        assert server.closed_by_client.wait(15), "gosmall must hang up on the registry"
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.startswith(
        f"Dockerfile:1:6: {server.host}/team/app:1: cannot resolve digest: HEAD http://{server.host}/v2/team/app/manifests/1: "
        f"gosmall stopped waiting for the registry {server.host}"
    )
    assert "1 reference(s) could not be resolved, because a registry could not be asked" in done.stderr
    assert "--timeout 12 seconds" in done.stderr
    assert took < 100  # generous: it stopped, instead of running on


def test_pin_asks_a_silent_registry_about_several_references_at_once(tmp_path: Path) -> None:
    with raw_server(never_answer) as server:
        _repo(tmp_path, {"Dockerfile": "".join(f"FROM {server.host}/team/app{i}:1\n" for i in range(3))}, git=False)
        started = time.monotonic()
        done = gosmall("pin", "--check", "--timeout", "6", cwd=tmp_path, timeout=300)
        took = time.monotonic() - started
    assert done.returncode == 2, done.stdout + done.stderr
    assert [line.split(": cannot resolve digest: ")[0] for line in done.stdout.splitlines()] == [
        f"Dockerfile:{i + 1}:6: {server.host}/team/app{i}:1" for i in range(3)
    ]
    assert server.most_open == 3  # all three asked at the same time
    assert took < 60  # three in sequence would be three bounds; generous either way


class _Counting:
    """A resolver that counts how many resolve calls run at the same time."""

    def __init__(self, inner: RegistryResolver) -> None:
        self.inner = inner
        self.lock = threading.Lock()
        self.now = self.most = 0

    def resolve(self, reference: Reference) -> Digest:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            return self.inner.resolve(reference)
        finally:
            with self.lock:
                self.now -= 1


def test_resolving_is_concurrent_and_bounded(tmp_path: Path) -> None:
    count = RESOLVE_WORKERS + 2
    with raw_server(never_answer) as server:
        (tmp_path / "Dockerfile").write_text("".join(f"FROM {server.host}/team/app{i}:1\n" for i in range(count)))
        resolver = _Counting(RegistryResolver(RegistryClient(timeout=3)))
        result = pin_references(tmp_path, check=True, resolver=resolver, timeout=120)
    # Several at once, never more than the bound: counted, not timed (a loaded machine must not change the answer).
    assert resolver.most == RESOLVE_WORKERS
    assert [f.code for f in result.unresolved] == [2] * count
    assert all("did not finish answering within 3 s" in f.detail for f in result.unresolved)
    assert result.exit_status == 2


def test_the_run_bound_holds_for_any_resolver(tmp_path: Path) -> None:
    class Stuck:
        def resolve(self, reference: Reference) -> Digest:
            time.sleep(4)
            raise AssertionError("never used: the run's time is out by then")

    (tmp_path / "Dockerfile").write_text(f"FROM {NOBODY}/a:1\nFROM {NOBODY}/b:1\n")
    result = pin_references(tmp_path, check=True, resolver=Stuck(), timeout=1)
    assert len(result.unresolved) == 2 and result.exit_status == 2
    assert "asking registries may take 1 s in all, and that time ran out" in result.unresolved[0].detail


# -- redaction, end to end -----------------------------------------------------------


def test_pin_never_shows_the_token_a_registry_echoes(tmp_path: Path) -> None:
    token = "tok-ECHOED-SECRET-9"
    config = tmp_path / "docker"
    config.mkdir()
    with http_server(bearer_registry(json.dumps({"token": token}).encode(), echo=True)) as host:
        auth = base64.b64encode(b"alice:pa55-SECRET").decode()
        (config / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
        project = _repo(tmp_path / "p", {"Dockerfile": f"FROM {host}/team/app:1\n"}, git=False)
        done = gosmall("pin", "--check", cwd=project, env={"DOCKER_CONFIG": str(config)})
    shown = done.stdout + done.stderr
    assert done.returncode == 2, shown
    assert "HTTP 403 (denied: request was GET /v2/team/app/manifests/1 Authorization: [redacted]" in shown
    assert token not in shown and "ECHOED-SECRET" not in shown
    assert auth not in shown and "pa55" not in shown


# -- the pre-commit hook ---------------------------------------------------------------


@pytest.fixture(scope="session")
def hook_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """This working tree's package and .pre-commit-hooks.yaml, committed to a repository pre-commit can clone."""
    source = tmp_path_factory.mktemp("gosmall-hook-source")
    for name in ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "stages", source / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    git_commit(source)
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, check=True).stdout.strip()
    return source, rev


@pytest.mark.slow
def test_pre_commit_hook_refuses_an_unpinned_dockerfile(hook_source: tuple[Path, str], tmp_path: Path) -> None:
    # `language: python`, as users get it: pre-commit clones the repository and pip-installs it into
    # its own environment (from the index pip is configured with, here a local mirror), once per
    # PRE_COMMIT_HOME; the commits below reuse it.
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    source, rev = hook_source
    env = {"PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"), "PRE_COMMIT_COLOR": "never"}
    work = _repo(
        tmp_path / "work",
        {
            ".pre-commit-config.yaml": f"repos:\n  - repo: {source}\n    rev: {rev}\n    hooks:\n      - id: gosmall-verify-pins\n",
            "README.md": "How we build: FROM alpine:3 is not pinned here, and that is fine in prose.\n",
        },
    )
    pre_commit = [sys.executable, "-m", "pre_commit"]
    subprocess.run([*pre_commit, "install"], cwd=work, check=True, capture_output=True, env={**os.environ, **env})

    def commit(message: str) -> subprocess.CompletedProcess[str]:
        subprocess.run(["git", "add", "-A"], cwd=work, check=True)
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-m", message]
        return subprocess.run(git, cwd=work, capture_output=True, text=True, env={**os.environ, **env}, timeout=600)

    (work / "deploy").mkdir()
    (work / "deploy" / "Dockerfile").write_text("FROM alpine:3\n")
    # git hands a hook's output to stderr.
    refused = commit("unpinned")
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0, said
    assert "gosmall verify-pins" in said and "Failed" in said and "exit code: 1" in said
    assert "deploy/Dockerfile:1:6: alpine:3: not pinned by digest" in said
    assert "README.md" not in said  # prose is not passed to the hook

    (work / "deploy" / "Dockerfile").write_text(f"FROM alpine:3{PINNED}\n")
    accepted = commit("pinned")
    said = accepted.stdout + accepted.stderr
    assert accepted.returncode == 0, said
    assert "gosmall verify-pins" in said and "Passed" in said
    log = subprocess.run(["git", "log", "--format=%s"], cwd=work, capture_output=True, text=True, check=True).stdout
    assert log.splitlines()[0] == "pinned"
