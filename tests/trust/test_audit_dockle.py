"""Audit at least as thorough as Dockle: one planted defect per image, built without gosmall; build-small's own audit.

The images come from Debian's buildah, from scratch, as Docker-format archives so
that their Healthcheck survives: the clean one audits with no finding at all, so
each planted defect is exactly one line. build-small audits what it built before
writing anything, so every build in this suite is also proof that gosmall's own
images pass.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from gosmall.build.compile import host_platform
from gosmall.images.model import Platform
from tests.buildah_fixture import Buildah, put
from tests.conftest import gosmall, make_project

pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None or host_platform() != Platform.parse("linux/amd64"),
    reason="needs gcc building linux/amd64 programs for the images",
)

HEALTHCHECK = "CMD /app healthcheck"
TOKEN = "ghp_planted0000000000000000000000000000"  # the value that must never be shown
PASSWD_EMPTY = b"root:x:0:0:root:/:/sbin/nologin\napp::1000:1000:app:/home/app:/bin/sh\n"
PASSWD_TWICE = b"root:x:0:0:root:/:/sbin/nologin\napp:x:1000:1000::/:/sbin/nologin\nbackup:x:1000:1000::/:/sbin/nologin\n"


def audit(target: Path, *args: str, debug: bool = False) -> subprocess.CompletedProcess[str]:
    return gosmall(*(("-d",) if debug else ()), "audit", str(target), *args, cwd=target.parent)


def app_with(static_app: bytes, extra: Callable[[Path], None] = lambda root: None) -> Callable[[Path], None]:
    def plant(root: Path) -> None:
        put(root, "/app", static_app)
        extra(root)

    return plant


def test_the_clean_image_has_no_finding(buildah: Buildah, static_app: bytes) -> None:
    done = audit(buildah.image(app_with(static_app), healthcheck=HEALTHCHECK, destination="docker-archive"))
    assert (done.returncode, done.stdout) == (0, ""), done.stderr


@pytest.mark.parametrize(
    ("defect", "expected"),
    [
        ("token", "Env.API_TOKEN: secret-in-env: looks like a credential (TOKEN) and has a value"),
        ("empty-password", "/etc/passwd: empty-password: the account 'app' has an empty password field and the login shell /bin/sh"),
        ("duplicate-uid", "/etc/passwd: duplicate-id: UID 1000 is shared by 'app' and 'backup'"),
        ("cache", "/root/.cache: unnecessary-file: is a cache directory a build or a tool left behind; nothing needs it at run time"),
        ("swap", "/etc/app/.config.yaml.swp: unnecessary-file: is an editor's swap file; nothing needs it at run time"),
    ],
)
def test_one_planted_defect_gives_exactly_its_finding_and_exit_1(buildah: Buildah, static_app: bytes, defect: str, expected: str) -> None:
    plants: dict[str, Callable[[Path], None]] = {
        "token": lambda root: None,
        "empty-password": lambda root: put(root, "/etc/passwd", PASSWD_EMPTY, 0o644),
        "duplicate-uid": lambda root: put(root, "/etc/passwd", PASSWD_TWICE, 0o644),
        "cache": lambda root: put(root, "/root/.cache/go-build/00/0a1b-d", b"object", 0o644),
        "swap": lambda root: put(root, "/etc/app/.config.yaml.swp", b"b0VIM 9.0", 0o644),
    }
    env = [f"API_TOKEN={TOKEN}", "TZ=UTC"] if defect == "token" else []
    target = buildah.image(app_with(static_app, plants[defect]), env=env, healthcheck=HEALTHCHECK, destination="docker-archive")
    text = audit(target)
    assert text.returncode == 1, text.stderr
    assert len(text.stdout.splitlines()) == 1 and text.stdout.startswith(f"linux/amd64: {expected}"), text.stdout
    (finding,) = json.loads(audit(target, "--format", "json").stdout)
    assert finding["rule"] == expected.split(": ")[1] and finding["level"] == "error"
    if defect == "token":
        assert finding["key"] == "Env.API_TOKEN"
        # Never the value: not in any format, not with invoke's debug output either.
        for debug in (False, True):
            for args in ((), ("--format", "json"), ("--format", "sarif")):
                done = audit(target, *args, debug=debug)
                assert done.returncode == 1 and "API_TOKEN" in done.stdout, (debug, args, done.stderr)
                assert TOKEN not in done.stdout + done.stderr and TOKEN[:12] not in done.stdout + done.stderr, (debug, args)


def test_an_allowed_rule_passes_and_is_not_shown(buildah: Buildah, static_app: bytes) -> None:
    target = buildah.image(
        app_with(static_app, lambda root: put(root, "/etc/passwd", PASSWD_EMPTY, 0o644)),
        healthcheck=HEALTHCHECK,
        destination="docker-archive",
    )
    done = audit(target, "--allow", "empty-password")
    assert (done.returncode, done.stdout) == (0, ""), done.stderr


# -- build-small audits its own output ------------------------------------------------------------


def table(image_keys: str, env: str = 'TZ_NAME = "Europe/Berlin"') -> str:
    """The sample project's [tool.gosmall], for linux/amd64 only, with `image_keys` added to its image and its env replaced."""
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    text = text[text.index("[tool.gosmall]") :].replace('platforms = ["linux/amd64", "linux/arm64"]\n', "")
    return text.replace('env = { TZ_NAME = "Europe/Berlin" }', f"env = {{ {env} }}") + image_keys


@pytest.mark.slow
def test_build_small_fails_on_a_planted_finding_and_writes_nothing_until_it_is_allowed(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", table('files = [{ src = "static", dst = "/static" }]\n'), git=False)
    (root / "static").mkdir()
    (root / "static" / "index.html").write_text("<h1>hi</h1>\n")
    (root / "static" / ".index.html.swp").write_bytes(b"b0VIM 9.0")

    refused = gosmall("build-small", cwd=root)
    assert refused.returncode == 1, refused.stderr
    assert "linux/amd64: /static/.index.html.swp: unnecessary-file: is an editor's swap file" in refused.stderr
    assert 'add audit_allow = ["unnecessary-file"] to [tool.gosmall.images.hello]' in refused.stderr
    assert not (root / "dist").exists() or not any((root / "dist").iterdir())

    # Allowed in the image's table, the same file builds, and `gosmall audit` of that output holds it to the same table.
    allowed = 'files = [{ src = "static", dst = "/static" }]\naudit_allow = ["unnecessary-file"]\nallow_env_secrets = ["API_TOKEN"]\n'
    (root / "pyproject.toml").write_text('[project]\nname = "sample"\nversion = "0"\n\n' + table(allowed, env='API_TOKEN = "not-secret"'))
    built = gosmall("build-small", cwd=root)
    assert built.returncode == 0, built.stderr
    assert "no-healthcheck" not in built.stderr  # the sample image has one
    output = gosmall("audit", "dist/hello", cwd=root)
    assert output.returncode == 0 and "unnecessary-file" not in output.stdout, output.stdout + output.stderr
    elsewhere = tmp_path / "image.tar"  # no longer a configured image's output: every rule applies
    shutil.copyfile(root / "dist" / "hello" / "image.tar", elsewhere)
    copied = gosmall("audit", str(elsewhere), "--format", "json", cwd=tmp_path)
    assert copied.returncode == 1
    assert {(f["rule"], f.get("path") or f.get("key")) for f in json.loads(copied.stdout) if f["level"] == "error"} == {
        ("unnecessary-file", "/static/.index.html.swp"),
        ("secret-in-env", "Env.API_TOKEN"),
    }
    assert "not-secret" not in copied.stdout


def test_audit_allow_with_an_unknown_rule_is_a_config_error(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", table('audit_allow = ["unnecesary-file"]\n'), git=False)
    done = gosmall("build-small", cwd=root)
    assert done.returncode == 2
    assert "[tool.gosmall.images.hello] audit_allow[0]: 'unnecesary-file' is not an audit rule" in done.stderr
    assert "Did you mean 'unnecessary-file'?" in done.stderr
    assert not (root / "dist").exists()
