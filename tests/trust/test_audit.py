"""Audit: gosmall's own images pass; images with one planted defect each give exactly that finding.

The bad images are made twice over: by gosmall's own assembly (assemble.py with
FileEntry values) and by an independent builder, Debian's buildah, from scratch.
Then the same audit by Docker engine name and by registry reference.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gosmall.audit_rules import RULES
from gosmall.build.assemble import PlatformParts, assemble
from gosmall.build.compile import Binary, compile_binary, host_platform, plan_compile
from gosmall.build.libraries import collect_libraries
from gosmall.build.runtime_files import RuntimeFiles, collect_runtime_files, with_libraries
from gosmall.build.source import SourceInfo
from gosmall.build.toolchain import Toolchain, find_module, find_toolchain
from gosmall.config import ImageConfig, parse_project
from gosmall.errors import GosmallError
from gosmall.images.docker_archive import write_docker_archive
from gosmall.images.model import Image, Platform
from gosmall.images.oci_layout import write_oci_layout
from gosmall.images.source import read_path
from gosmall.layer_files import FileEntry
from gosmall.registry.client import RegistryClient
from gosmall.trust.audit import Finding, audit_image, failing, format_findings
from tests.buildah_fixture import REVISION, Buildah, gcc, missing, put
from tests.conftest import REPO, BuiltProject, gosmall, make_project
from tests.registry.test_registry import make_layout
from tests.registry_fixture import push_layout

if TYPE_CHECKING:  # pragma: no cover
    import docker

    from tests.registry_fixture import LocalRegistry

AMD64 = Platform.parse("linux/amd64")
SOURCE = SourceInfo("v1.0.0", REVISION, "https://example.com/app.git", 1767323045)
BUSYBOX = Path("/bin/busybox")
HEALTHCHECK = ["/app", "healthcheck"]
# buildah drops Healthcheck from OCI-format images (it warns so): its OCI layouts are held to every other rule.
NO_HEALTHCHECK = ("--allow", "no-healthcheck")

pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None or host_platform() != AMD64, reason="needs gcc building linux/amd64 programs for the images"
)


def lines(findings: Sequence[Finding]) -> list[str]:
    return [finding.line() for finding in findings]


@pytest.fixture(scope="module")
def private_key(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if shutil.which("openssl") is None:
        missing("openssl is not installed (apt-get install openssl)")
    out = tmp_path_factory.mktemp("key") / "key.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(out)], check=True, capture_output=True)
    return out.read_bytes()


@pytest.fixture(scope="module")
def busybox() -> bytes:
    if not BUSYBOX.is_file():
        missing("busybox-static is not installed (apt-get install busybox-static)")
    return BUSYBOX.read_bytes()


@pytest.fixture(scope="module")
def toolchain() -> Toolchain:
    return find_toolchain(find_module(REPO / "go_app"))


# --- gosmall's own assembly ---------------------------------------------------------------


def image_config(root: Path, **keys: Any) -> ImageConfig:
    (root / "app").mkdir(parents=True, exist_ok=True)
    table = {
        "images": {"app": {"package": "app", "repository": "gosmall.test/audit", "tzdata": "none", "healthcheck": HEALTHCHECK, **keys}}
    }
    return parse_project(table, root / "pyproject.toml").images[0]


def assembled(
    tmp_path: Path,
    toolchain: Toolchain,
    program: bytes,
    *,
    plant: Sequence[FileEntry] = (),
    runtime: RuntimeFiles | None = None,
    source: SourceInfo = SOURCE,
    **keys: Any,
) -> Image:
    """An image made by assemble(), as build-small makes it, with `plant` added to its runtime files."""
    config = image_config(tmp_path, **keys)
    runtime = runtime or collect_runtime_files(config, toolchain)
    binary = tmp_path / "bin" / "app"
    binary.parent.mkdir(parents=True, exist_ok=True)
    binary.write_bytes(program)
    part = PlatformParts(Binary(binary, "app", AMD64, len(program), False), RuntimeFiles((*runtime.entries, *plant), runtime.env))
    return assemble(config, (part,), source)


def test_a_clean_gosmall_image_has_no_finding(tmp_path: Path, toolchain: Toolchain, static_app: bytes) -> None:
    assert audit_image(assembled(tmp_path, toolchain, static_app)) == ()


@pytest.mark.parametrize(
    ("plant", "keys", "expected"),
    [
        (
            [FileEntry("/usr/local/bin/helper", "file", 0o4555, "files", data=b"helper")],
            {},
            "/usr/local/bin/helper: setuid: is setuid (mode 4555, owner 0:0): it runs with its owner's privileges",
        ),
        ([], {"user": "root"}, "User: runs-as-root: '0:0' runs the container as root (UID 0)"),
        ([FileEntry("/data", "dir", 0o777, "dirs")], {}, "/data: world-writable: is writable by everyone (mode 0777)"),
        (
            [FileEntry("/etc/app.conf", "file", 0o444, "files", uid=1000, data=b"x")],
            {},
            "/etc/app.conf: non-root-owner: is owned by UID 1000, outside /home/nonroot, the home of the image's user",
        ),
        (
            [FileEntry("/srv/.env", "file", 0o444, "files", data=b"DB_PASSWORD=hunter2\n")],
            {},
            "/srv/.env: credential-file: is named like a credential file; build secrets must not ship in an image",
        ),
        (
            [FileEntry("/src/.git/config", "file", 0o444, "files", data=b"[core]\n")],
            {},
            "/src/.git: credential-file: is a git repository: its history and config can hold credentials and code that was never meant to ship",
        ),
        (
            [FileEntry("/root/.docker/config.json", "file", 0o444, "files", data=b"{}")],
            {},
            "/root/.docker/config.json: credential-file: is a Docker client config, which holds registry credentials",
        ),
        (
            [FileEntry("/usr/share/x/sh", "symlink", 0o777, "files", link_target="/app")],
            {},
            "/usr/share/x/sh: shell: is a shell (a link to /app): whoever gets into the container can run it",
        ),
    ],
    ids=["setuid", "root", "world-writable", "non-root-owner", "dotenv", "git", "docker-config", "sh-link"],
)
def test_gosmall_assembly_with_one_defect_gives_exactly_its_finding(
    tmp_path: Path, toolchain: Toolchain, static_app: bytes, plant: list[FileEntry], keys: dict[str, Any], expected: str
) -> None:
    assert lines(audit_image(assembled(tmp_path, toolchain, static_app, plant=plant, **keys))) == [f"linux/amd64: {expected}"]


def test_gosmall_assembly_with_busybox_or_a_private_key(
    tmp_path: Path, toolchain: Toolchain, static_app: bytes, busybox: bytes, private_key: bytes
) -> None:
    shell = assembled(tmp_path / "a", toolchain, static_app, plant=[FileEntry("/bin/busybox", "file", 0o555, "files", data=busybox)])
    assert lines(audit_image(shell)) == ["linux/amd64: /bin/busybox: shell: is busybox: whoever gets into the container can run it"]
    renamed = assembled(tmp_path / "b", toolchain, static_app, plant=[FileEntry("/usr/bin/tool", "file", 0o555, "files", data=busybox)])
    assert lines(audit_image(renamed)) == [
        "linux/amd64: /usr/bin/tool: shell: is busybox under another name: a shell and a hundred tools in one program"
    ]
    key = assembled(tmp_path / "c", toolchain, static_app, plant=[FileEntry("/etc/app/tls.pem", "file", 0o444, "files", data=private_key)])
    assert lines(audit_image(key)) == ["linux/amd64: /etc/app/tls.pem: credential-file: holds a PEM private key"]


def test_a_public_key_and_pem_words_in_a_program_are_not_private_keys(
    tmp_path: Path, toolchain: Toolchain, static_app: bytes, private_key: bytes
) -> None:
    public = subprocess.run(["openssl", "pkey", "-pubout"], input=private_key, check=True, capture_output=True).stdout
    words = b"\x7fELF...-----BEGIN RSA PRIVATE KEY-----\x00%s\x00-----END RSA PRIVATE KEY-----"
    plant = [
        FileEntry("/etc/app/tls.pub", "file", 0o444, "files", data=public),
        FileEntry("/usr/lib/libpem.so", "file", 0o444, "files", data=words),
    ]
    assert audit_image(assembled(tmp_path, toolchain, static_app, plant=plant)) == ()


def with_accounts(config: ImageConfig, toolchain: Toolchain, **files: bytes) -> RuntimeFiles:
    """gosmall's runtime files with /etc/passwd, /etc/group (and /etc/shadow) as given instead of its own."""
    runtime = collect_runtime_files(config, toolchain)
    kept = tuple(e for e in runtime.entries if e.path not in ("/etc/passwd", "/etc/group"))
    planted = tuple(FileEntry(f"/etc/{name}", "file", 0o444, "files", data=data) for name, data in files.items())
    return RuntimeFiles((*kept, *planted), runtime.env)


# gosmall's own accounts, then what a test adds.
USERS = b"root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"passwd": USERS + b"app:x:1000:1000::/:/bin/sh\n", "shadow": b"root:*:19000::::::\napp::19000::::::\n"},
            ["/etc/shadow: empty-password: the account 'app' has an empty password field and the login shell /bin/sh: "
             "anyone can log in as it without a password"],
        ),
        ({"passwd": USERS + b"app::1000:1000::/:/usr/sbin/nologin\n", "shadow": b"app::19000::::::\n"}, []),
        ({"passwd": USERS + b"app::1000:1000::/\n"}, ["/etc/passwd: empty-password: the account 'app' has an empty password field and no shell field (so /bin/sh): anyone can log in as it without a password"]),
        ({"passwd": USERS + b"toor:x:0:0::/:/sbin/nologin\n"}, ["/etc/passwd: duplicate-id: UID 0 is shared by 'root' and 'toor'"]),
        ({"passwd": USERS + b"root:x:7:7::/:/sbin/nologin\n"}, ["/etc/passwd: duplicate-id: the name 'root' is listed 2 times"]),
        (
            {"passwd": USERS, "group": b"root:x:0:\nstaff:x:50:\nwheel:x:50:\nstaff:x:51:\n"},
            ["/etc/group: duplicate-id: the name 'staff' is listed 2 times", "/etc/group: duplicate-id: GID 50 is shared by 'staff' and 'wheel'"],
        ),
        # Many accounts share a primary group: that is what groups are for.
        ({"passwd": USERS + b"a:x:1000:100::/:/sbin/nologin\nb:x:1001:100::/:/sbin/nologin\n# a comment\n+nis\n"}, []),
    ],
    ids=["shadow-empty", "nologin", "no-shell", "uid", "name", "group", "shared-primary-group"],
)  # fmt: skip
def test_accounts_with_an_empty_password_or_a_shared_id(
    tmp_path: Path, toolchain: Toolchain, static_app: bytes, files: dict[str, bytes], expected: list[str]
) -> None:
    runtime = with_accounts(image_config(tmp_path), toolchain, **files)
    assert lines(audit_image(assembled(tmp_path, toolchain, static_app, runtime=runtime))) == [f"linux/amd64: {e}" for e in expected]


def test_leftovers_are_found_once_per_directory_and_by_name(tmp_path: Path, toolchain: Toolchain, static_app: bytes) -> None:
    plant = [
        FileEntry("/srv/app/__pycache__/main.cpython-311.pyc", "file", 0o444, "files", data=b"\x00"),
        FileEntry("/srv/app/.svn/entries", "file", 0o444, "files", data=b"12"),
        FileEntry("/srv/app/config.yaml~", "file", 0o444, "files", data=b"x"),
        FileEntry("/srv/app/.DS_Store", "file", 0o444, "files", data=b"x"),
        FileEntry("/srv/app/fix.rej", "file", 0o444, "files", data=b"x"),
        FileEntry("/srv/app/.#notes.txt", "symlink", 0o777, "files", link_target="me@host.1234:1"),
        # Names that only look alike are kept.
        FileEntry("/srv/app/cache/index", "file", 0o444, "files", data=b"x"),
        FileEntry("/srv/app/~", "file", 0o444, "files", data=b"x"),
    ]
    assert lines(audit_image(assembled(tmp_path, toolchain, static_app, plant=plant))) == [
        "linux/amd64: /srv/app/.#notes.txt: unnecessary-file: is an Emacs lock or auto-save file; nothing needs it at run time",
        "linux/amd64: /srv/app/.DS_Store: unnecessary-file: is macOS Finder's folder index; nothing needs it at run time",
        "linux/amd64: /srv/app/.svn: unnecessary-file: is a Subversion working copy's metadata; nothing needs it at run time",
        "linux/amd64: /srv/app/__pycache__: unnecessary-file: is Python's bytecode cache; nothing needs it at run time",
        "linux/amd64: /srv/app/config.yaml~: unnecessary-file: is an editor's backup file; nothing needs it at run time",
        "linux/amd64: /srv/app/fix.rej: unnecessary-file: is a leftover of a patch that did not apply; nothing needs it at run time",
    ]


def test_secret_in_env_names_the_variable_never_the_value_and_honours_allow_env_secrets(
    tmp_path: Path, toolchain: Toolchain, static_app: bytes
) -> None:
    env = {"DB_PASSWORD": "hunter2-planted", "API_KEY": "", "PASSWORDLESS": "yes"}
    config = image_config(tmp_path, env=env, allow_env_secrets=["DB_PASSWORD"])
    image = assembled(tmp_path, toolchain, static_app, env=env, allow_env_secrets=["DB_PASSWORD"])
    found = audit_image(image)  # an image on its own: nothing says the variable was allowed
    assert [(f.rule, f.where) for f in found] == [("secret-in-env", "Env.DB_PASSWORD")]
    assert "hunter2" not in format_findings(found, "text") + format_findings(found, "json") + format_findings(found, "sarif")
    assert audit_image(image, config=config) == ()  # its own config allowed it


def test_no_healthcheck_is_information(tmp_path: Path, toolchain: Toolchain, static_app: bytes) -> None:
    image = assembled(tmp_path, toolchain, static_app, healthcheck=[])
    found = audit_image(image)
    assert lines(found) == [
        "linux/amd64: Healthcheck: no-healthcheck: is not set, so the engine cannot tell a hung program from a working one"
    ]
    assert failing(found) == ()


def test_audit_allow_names_only_known_rules(tmp_path: Path) -> None:
    assert image_config(tmp_path, audit_allow=["no-healthcheck", "setuid"]).audit_allow == ("no-healthcheck", "setuid")
    with pytest.raises(
        GosmallError,
        match=r"audit_allow\[1\]: 'runs-as-rot' is not an audit rule; the rules are: runs-as-root, .*Did you mean 'runs-as-root'\?",
    ):
        image_config(tmp_path, audit_allow=["setuid", "runs-as-rot"])


def test_the_readme_table_lists_every_rule_with_its_level_and_checkpoint() -> None:
    text = (REPO / "README.md").read_text()
    table = text[text.index("| rule | level | finds | Dockle / CIS |") :].split("\n\n", 1)[0].splitlines()[2:]
    rows = [[cell.strip() for cell in row.strip("|").split("|")] for row in table]
    assert [(r[0], r[1], r[-1]) for r in rows] == [(f"`{rule.id}`", rule.level, rule.checkpoint or "—") for rule in RULES]


def test_an_image_over_max_size_and_without_source_labels(tmp_path: Path, toolchain: Toolchain, static_app: bytes) -> None:
    image = assembled(tmp_path, toolchain, static_app, source=SourceInfo("dev", "", "", 0), max_size="1KiB")
    assert audit_image(image) == tuple(f for f in audit_image(image) if f.rule == "missing-source-label")
    config = image_config(tmp_path, max_size="1KiB")
    size = image.manifests[0].uncompressed_size
    assert lines(audit_image(image, config=config)) == [
        "linux/amd64: org.opencontainers.image.source: missing-source-label: is neither a label in the config nor an annotation of the manifest",
        "linux/amd64: org.opencontainers.image.revision: missing-source-label: is neither a label in the config nor an annotation of the manifest",
        f"linux/amd64: max_size: max-size: {size / 1024:.1f} KiB uncompressed ({size} bytes), over the max_size of 1.0 KiB (1024 bytes) in [tool.gosmall.images.app]",
    ]
    assert [f.level for f in audit_image(image, config=config)] == ["info", "info", "error"]


@pytest.mark.slow
@pytest.mark.parametrize("drop_libc", [False, True])
def test_a_cgo_image_passes_and_without_libc_its_entrypoint_cannot_load(tmp_path: Path, drop_libc: bool) -> None:
    source = tmp_path / "cgo_app"
    shutil.copytree(REPO / "tests" / "fixtures" / "cgo_app", source)
    config = parse_project(
        {"images": {"cgo": {"package": "cgo_app", "repository": "gosmall.test/cgo", "cgo": True, "healthcheck": HEALTHCHECK}}},
        tmp_path / "pyproject.toml",
    ).images[0]
    module = find_module(source)
    toolchain = find_toolchain(module)
    binary = compile_binary(plan_compile(config, module, AMD64, "dev"), toolchain, tmp_path)
    closure = collect_libraries(binary.path, binary_image_path=f"/{binary.name}")
    runtime = with_libraries(collect_runtime_files(config, toolchain), closure)
    if drop_libc:
        runtime = RuntimeFiles(tuple(e for e in runtime.entries if not e.path.endswith("/libc.so.6")), runtime.env)
    image = assemble(config, (PlatformParts(binary, runtime),), SOURCE)

    expected = [f"linux/amd64: /{binary.name}: entrypoint: needs libc.so.6, which is not in the image where ld.so looks"]
    assert lines(audit_image(image)) == (expected if drop_libc else [])


# --- an independent builder: buildah from scratch ----------------------------------------------


def audit(target: Path | str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return gosmall("audit", str(target), *args, cwd=cwd or Path.cwd())


def test_a_clean_buildah_image_passes_as_a_layout_and_as_an_archive(buildah: Buildah, static_app: bytes) -> None:
    def plant(root: Path) -> None:
        put(root, "/app", static_app)

    # buildah keeps a Healthcheck only in Docker-format images: the OCI layout has none, which is information.
    layout = audit(buildah.image(plant))
    no_healthcheck = "linux/amd64: Healthcheck: no-healthcheck: is not set, so the engine cannot tell a hung program from a working one\n"
    assert (layout.returncode, layout.stdout) == (0, no_healthcheck), layout.stderr
    archive = audit(buildah.image(plant, destination="docker-archive", healthcheck="CMD /app healthcheck"))
    assert (archive.returncode, archive.stdout) == (0, ""), archive.stderr
    assert "no finding fails the audit" in archive.stderr


def test_buildah_images_with_one_defect_each_give_exactly_their_finding(
    buildah: Buildah, static_app: bytes, busybox: bytes, private_key: bytes
) -> None:
    def with_app(extra: Callable[[Path], None]) -> Callable[[Path], None]:
        def plant(root: Path) -> None:
            put(root, "/app", static_app)
            extra(root)

        return plant

    def world_writable(root: Path) -> None:
        (root / "data").mkdir()
        os.chmod(root / "data", 0o777)

    cases: list[tuple[Path, str]] = [
        (buildah.image(with_app(lambda r: put(r, "/usr/local/bin/helper", static_app, 0o4755))), "/usr/local/bin/helper: setuid: is setuid (mode 4755, owner 0:0)"),
        (buildah.image(with_app(lambda r: None), user="0"), "User: runs-as-root: '0' runs the container as root (UID 0)"),
        (buildah.image(with_app(lambda r: None), user=""), "User: runs-as-root: is not set, so the container runs as root"),
        (buildah.image(with_app(lambda r: put(r, "/bin/busybox", busybox))), "/bin/busybox: shell: is busybox"),
        (buildah.image(with_app(world_writable)), "/data: world-writable: is writable by everyone (mode 0777)"),
        (buildah.image(with_app(lambda r: put(r, "/etc/ssl/private/server.key", private_key, 0o600))), "/etc/ssl/private/server.key: credential-file: holds a PEM private key"),
        (buildah.image(with_app(lambda r: put(r, "/etc/app.conf", b"x", 0o644, uid=1000))), "/etc/app.conf: non-root-owner: is owned by UID 1000"),
        (buildah.image(lambda r: put(r, "/app", static_app, 0o644)), "/app: entrypoint: Entrypoint[0] is not executable (mode 0644)"),
        (buildah.image(with_app(lambda r: None), entrypoint=("/gone",)), "/gone: entrypoint: Entrypoint[0] is not in the image"),
        (buildah.image(with_app(lambda r: None), labels={}, destination="docker-archive"), "org.opencontainers.image.source: missing-source-label"),
    ]  # fmt: skip
    for target, expected in cases:
        done = audit(target, "--format", "json", *NO_HEALTHCHECK)
        findings = json.loads(done.stdout)
        shown = audit(target, *NO_HEALTHCHECK).stdout.splitlines()
        if expected.startswith("org.opencontainers"):
            # Info: printed, never failing; both keys are missing.
            assert done.returncode == 0 and [f["rule"] for f in findings] == ["missing-source-label"] * 2
        else:
            assert done.returncode == 1, (expected, done.stderr)
            assert len(findings) == 1 and len(shown) == 1, shown
        assert shown[0].startswith(f"linux/amd64: {expected}"), shown


@pytest.mark.parametrize("with_library", [True, False])
def test_a_dynamic_buildah_entrypoint_needs_all_its_libraries_in_the_image(buildah: Buildah, tmp_path: Path, with_library: bool) -> None:
    library = gcc(tmp_path / "build" / "libgreet.so.1", "greet.c", "-shared", "-fPIC", "-nostdlib", "-Wl,-soname,libgreet.so.1")
    program = gcc(tmp_path / "build" / "app", "greet_main.c", f"-L{library.parent}", "-l:libgreet.so.1", "-Wl,-rpath,/opt/greet/lib", "-s")
    # The loader and libc, copied as the files they are (no links), where ld.so looks by default.
    host = subprocess.run(["ldd", str(program)], capture_output=True, text=True, check=True).stdout
    libc = next(line.split("=>")[1].split()[0] for line in host.splitlines() if "libc.so.6" in line)

    def plant(root: Path) -> None:
        put(root, "/app", program.read_bytes())
        put(root, "/lib64/ld-linux-x86-64.so.2", Path("/lib64/ld-linux-x86-64.so.2").read_bytes())
        put(root, "/lib/x86_64-linux-gnu/libc.so.6", Path(libc).read_bytes(), 0o644)
        if with_library:
            put(root, "/opt/greet/lib/libgreet.so.1", library.read_bytes(), 0o644)

    done = audit(buildah.image(plant), *NO_HEALTHCHECK)
    if with_library:
        assert (done.returncode, done.stdout) == (0, ""), done.stdout + done.stderr
    else:
        assert done.returncode == 1
        assert done.stdout.splitlines() == [
            "linux/amd64: /app: entrypoint: needs libgreet.so.1, which is not in the image where ld.so looks"
        ]


def manifest_of(layout: Path) -> dict[str, Any]:
    digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"].split(":")[1]
    return json.loads((layout / "blobs" / "sha256" / digest).read_text())


def test_files_removed_in_a_later_buildah_layer_are_not_audited(buildah: Buildah, static_app: bytes, private_key: bytes) -> None:
    def bad(root: Path) -> None:
        put(root, "/app", static_app)
        put(root, "/usr/bin/helper", static_app, 0o4755)
        put(root, "/secrets/id_rsa", private_key, 0o600)

    def removed(root: Path) -> None:
        (root / "usr" / "bin" / "helper").unlink()
        shutil.rmtree(root / "secrets")

    first = buildah.image(bad, keep="localhost/first")
    assert [line.split(": ")[1:3] for line in audit(first, *NO_HEALTHCHECK).stdout.splitlines()] == [
        ["/secrets/id_rsa", "credential-file"],
        ["/usr/bin/helper", "setuid"],
    ]
    second = buildah.image(removed, base="localhost/first")
    assert len(manifest_of(second)["layers"]) == 2  # the removals are whiteouts in a layer of their own
    done = audit(second, *NO_HEALTHCHECK)
    assert (done.returncode, done.stdout) == (0, ""), done.stdout


# --- what gosmall builds, and where images live ----------------------------------------------


def test_the_go_app_image_gosmall_builds_passes(built_hello: BuiltProject) -> None:
    for target in (built_hello.output, built_hello.output / "oci", built_hello.output / "image.tar"):
        done = audit(target, "--format", "json", cwd=built_hello.root)
        assert done.returncode == 0, done.stderr
        # The sample project has no origin remote; its label declares the source, git's HEAD the revision.
        assert json.loads(done.stdout) == []
    assert audit_image(read_path(built_hello.output / "oci")) == ()


@pytest.mark.slow
def test_a_built_image_is_held_to_the_max_size_its_config_now_says(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert gosmall("build-small", cwd=root).returncode == 0
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('max_size = "12MiB"', 'max_size = "1MiB"'))
    for target in (root / "dist" / "hello", root / "dist" / "hello" / "image.tar"):
        done = audit(target, "--allow", "missing-source-label", cwd=root)
        assert done.returncode == 1
        assert [line.split(": ")[1:3] for line in done.stdout.splitlines()] == [["max_size", "max-size"]] * (2 if target.is_dir() else 1)
        assert "over the max_size of 1.0 MiB (1048576 bytes) in [tool.gosmall.images.hello]" in done.stdout
    elsewhere = tmp_path / "copy.tar"
    shutil.copyfile(root / "dist" / "hello" / "image.tar", elsewhere)
    assert audit(elsewhere, "--allow", "missing-source-label", cwd=root).returncode == 0  # not a configured image's output


def test_bad_arguments_and_missing_targets_exit_2(tmp_path: Path) -> None:
    missing = audit(tmp_path / "nothing-here")
    assert missing.returncode == 2 and "no such file or directory" in missing.stderr and missing.stdout == ""
    (tmp_path / "dir").mkdir()
    not_layout = audit(tmp_path / "dir")
    assert not_layout.returncode == 2 and "not an OCI image layout" in not_layout.stderr
    typo = audit(tmp_path / "dir", "--allow", "setuidd")
    assert typo.returncode == 2 and "Did you mean 'setuid'?" in typo.stderr
    fmt = audit(tmp_path / "dir", "--format", "xml")
    assert fmt.returncode == 2 and "--format 'xml' is not known; use text, json or sarif." in fmt.stderr
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 64)
    junk = audit(tmp_path / "junk.tar")
    assert junk.returncode == 2 and "is not a readable docker archive" in junk.stderr and "Traceback" not in junk.stderr


def test_allow_silences_a_rule_by_id(tmp_path: Path, toolchain: Toolchain, static_app: bytes) -> None:
    image = assembled(tmp_path, toolchain, static_app, plant=[FileEntry("/usr/bin/helper", "file", 0o4555, "files", data=b"x")])
    write_oci_layout(image, tmp_path / "layout", "gosmall.test/audit", ("latest",))
    assert audit(tmp_path / "layout").returncode == 1
    allowed = audit(tmp_path / "layout", "--allow", "setuid")
    assert (allowed.returncode, allowed.stdout) == (0, "")


@pytest.fixture
def engine_tag(docker_client: docker.DockerClient) -> Iterator[str]:
    """A tag no other test run uses, removed afterwards (only the tag: the image may be another run's too)."""
    tag = f"gosmall-audit-test:{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield tag
    try:
        docker_client.images.remove(tag)
    except Exception:  # noqa: BLE001 - nothing to clean when the test failed before tagging
        pass


@pytest.mark.docker
def test_audit_by_engine_name_finds_what_the_archive_holds(
    built_hello: BuiltProject, docker_client: docker.DockerClient, engine_tag: str
) -> None:
    (loaded,) = docker_client.images.load((built_hello.output / "image.tar").read_bytes())
    loaded.tag(engine_tag)
    by_name = audit(engine_tag, cwd=built_hello.root)
    by_file = audit(built_hello.output / "image.tar", cwd=built_hello.root)
    assert by_name.returncode == 0, by_name.stderr
    # The same image through the engine's own `docker save`: the same findings, none (the sample declares its
    # source, and the engine keeps the config's Labels).
    assert by_name.stdout == by_file.stdout == ""


@pytest.mark.docker
def test_audit_by_engine_name_reports_a_planted_defect(
    tmp_path: Path, toolchain: Toolchain, static_app: bytes, docker_client: docker.DockerClient, engine_tag: str
) -> None:
    image = assembled(tmp_path, toolchain, static_app, plant=[FileEntry("/data", "dir", 0o777, "dirs")])
    archive = tmp_path / "image.tar"
    with archive.open("wb") as stream:
        write_docker_archive(image.manifests[0], stream, "gosmall.test/audit", ("bad",), SOURCE.epoch)
    (loaded,) = docker_client.images.load(archive.read_bytes())
    loaded.tag(engine_tag)
    done = audit(engine_tag, "--allow", "missing-source-label")
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["linux/amd64: /data: world-writable: is writable by everyone (mode 0777)"]


@pytest.mark.docker
def test_audit_by_engine_name_of_an_image_the_engine_lacks_exits_2(docker_client: docker.DockerClient) -> None:
    done = audit(f"gosmall-audit-test:absent-{uuid.uuid4().hex[:8]}")
    assert done.returncode == 2 and "the Docker engine has no image of that name" in done.stderr


def test_audit_by_registry_reference_of_a_multi_platform_image(tmp_path: Path, registry: LocalRegistry) -> None:
    # A hand-made image (no user, no entrypoint): findings on both platforms to compare. gosmall's sample has none.
    layout = make_layout(tmp_path / "oci", platforms=("linux/amd64", "linux/arm64"))
    digest = push_layout(layout, f"{registry.host}/audit/multi:1", client=RegistryClient())
    by_reference = audit(f"docker://{registry.host}/audit/multi@{digest}", "--format", "json", cwd=tmp_path)
    by_layout = audit(layout, "--format", "json", cwd=tmp_path)
    assert by_reference.returncode == by_layout.returncode == 1, by_reference.stderr
    image_findings = [f for f in json.loads(by_reference.stdout) if f["rule"] != "proofs"]  # the registry also lists proofs
    assert image_findings == json.loads(by_layout.stdout)
    by_reference = audit(f"docker://{registry.host}/audit/multi@{digest}", cwd=tmp_path)
    assert {line.split(": ")[0] for line in by_reference.stdout.splitlines()} == {"linux/amd64", "linux/arm64"}


def test_audit_by_registry_reference_pulls_a_layer_larger_than_one_answer(
    tmp_path: Path, toolchain: Toolchain, static_app: bytes, registry: LocalRegistry
) -> None:
    # Random bytes do not compress: the layer blob is over the 4 MiB one answer may carry, so it comes in ranges.
    big = FileEntry("/usr/bin/helper", "file", 0o4555, "files", data=os.urandom(6 * 2**20))
    image = assembled(tmp_path, toolchain, static_app, plant=[big])
    assert image.manifests[0].layers[0].blob.size > 4 * 2**20
    write_oci_layout(image, tmp_path / "layout", "gosmall.test/audit", ("big",))
    digest = push_layout(tmp_path / "layout", f"{registry.host}/audit/big:1", client=RegistryClient())
    done = audit(f"docker://{registry.host}/audit/big@{digest}")
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [
        "linux/amd64: /usr/bin/helper: setuid: is setuid (mode 4555, owner 0:0): it runs with its owner's privileges"
    ]
