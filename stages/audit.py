"""Audit: hold any image, gosmall's or anyone's, to what a hardened scratch image promises.

`audit_image` takes the one image model (`image.Image`), so the image
`build-small` assembles in memory and an image read from a layout, an
archive, the engine or a registry (`image_source`) are audited alike. Each
platform is audited on its config and its flattened file system (`rootfs`);
ELF files are read with `elf.read_elf`, and a dynamic entrypoint's loader and
libraries are looked for with the same resolver the cgo build uses, inside
the image.

Every rule has an id and a level. An "error" finding fails the audit (exit
status 1) unless its rule is allowed; an "info" finding is printed and never
changes the exit status.
"""

from __future__ import annotations

import json
import posixpath
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .config import ImageConfig, NoProjectError, load_project
from .elf import MAGIC, ElfError, NotElfError, machine_for_platform, read_elf_bytes
from .errors import GosmallError, did_you_mean
from .image import Image, Platform, PlatformImage
from .image_source import read_target
from .libraries import LibraryNotFoundError, collect_libraries
from .redact import printable, redact
from .report import human
from .rootfs import ImageFile, RootFS, flatten

Level = Literal["error", "info"]
Format = Literal["text", "json"]


@dataclass(frozen=True)
class Rule:
    id: str
    level: Level
    summary: str  # what a finding of it means, for --help and the README


RULES = (
    Rule("runs-as-root", "error", "the config's User is empty, 0 or root (or a name /etc/passwd gives UID 0)"),
    Rule("shell", "error", "a shell, busybox or a package manager is in the image"),
    Rule("setuid", "error", "a file is setuid or setgid"),
    Rule("world-writable", "error", "a file or directory anyone may write (a sticky /tmp or /var/tmp excepted)"),
    Rule("non-root-owner", "error", "a file owned by a non-root user outside the home of the image's user"),
    Rule("entrypoint", "error", "the entrypoint is missing, not executable, or its loader or libraries are not in the image"),
    Rule(
        "credential-file", "error", "a private key or credential file (PEM private key, id_rsa, .env, .netrc, .git/, .docker/config.json)"
    ),
    Rule("missing-source-label", "info", "org.opencontainers.image.source or .revision is neither a label nor an annotation"),
    Rule("max-size", "error", "a configured image is over its max_size"),
)
RULES_BY_ID = {rule.id: rule for rule in RULES}

SOURCE_KEYS = ("org.opencontainers.image.source", "org.opencontainers.image.revision")
SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "busybox", "toybox"})
PACKAGE_MANAGERS = frozenset({"apk", "apt", "apt-get", "aptitude", "dpkg", "rpm", "yum", "dnf", "microdnf", "zypper", "pacman", "opkg"})
CREDENTIAL_NAMES = frozenset({"id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", ".netrc", "_netrc", ".env", ".git-credentials", ".pgpass"})
# Sticky, world-writable scratch directories are what they are for.
SCRATCH_DIRS = ("/tmp", "/var/tmp")
# What the engine searches when the image's Env sets no PATH (Docker's and containerd's default).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_BUSYBOX = b"BusyBox v"
_PEM_BEGIN = re.compile(rb"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----")
# A key's body: base64 lines, and the Proc-Type/DEK-Info headers of an encrypted legacy key.
_PEM_BODY = re.compile(rb"[A-Za-z0-9+/=\s:,.-]{32,}")
_PEM_REACH = 65536  # bytes from BEGIN to END: far more than any key needs


@dataclass(frozen=True)
class Finding:
    platform: str
    rule: str  # a key of RULES_BY_ID
    where: str  # a path in the image ("/bin/sh") or a config key ("User")
    message: str

    @property
    def level(self) -> Level:
        return RULES_BY_ID[self.rule].level

    def line(self) -> str:
        return f"{self.platform}: {printable(self.where)}: {self.rule}: {self.message}"

    def to_json(self) -> dict[str, str]:
        place = "path" if self.where.startswith("/") else "key"
        return {"platform": self.platform, "rule": self.rule, "level": self.level, place: self.where, "message": self.message}


def audit_image(image: Image, *, config: ImageConfig | None = None) -> tuple[Finding, ...]:
    """Every finding for every platform of `image`; `config` adds the rules only a configured image has (max_size)."""
    index_annotations = _annotations(_document(image.index.data)) if image.index is not None else {}
    findings: list[Finding] = []
    for platform_image in image.manifests:
        findings += audit_platform(platform_image, index_annotations=index_annotations, config=config)
    return tuple(findings)


def audit_platform(
    image: PlatformImage, *, index_annotations: Mapping[str, str] | None = None, config: ImageConfig | None = None
) -> tuple[Finding, ...]:
    platform = str(image.platform)
    runtime = _document(image.config.data).get("config")
    runtime = runtime if isinstance(runtime, dict) else {}
    root = flatten([layer.tar for layer in image.layers], where=platform)
    user = _User.of(runtime, root)

    def found(rule: str, where: str, message: str) -> Finding:
        return Finding(platform, rule, where, message)

    findings = [found("runs-as-root", "User", message) for message in _runs_as_root(user)]
    for entry in root:
        findings += (found(rule, entry.path, message) for rule, message in _file_findings(entry, root, user))
    findings += (found("entrypoint", where, message) for where, message in _entrypoint(runtime, root, image.platform))
    annotations = {**(index_annotations or {}), **_annotations(_document(image.manifest.data))}
    labels = runtime.get("Labels")
    labels = labels if isinstance(labels, dict) else {}
    for key in SOURCE_KEYS:
        if not (str(labels.get(key) or "") or annotations.get(key)):
            findings.append(found("missing-source-label", key, "is neither a label in the config nor an annotation of the manifest"))
    if config is not None and config.max_size is not None and image.uncompressed_size > config.max_size:
        size = image.uncompressed_size
        findings.append(
            found(
                "max-size",
                "max_size",
                f"{human(size)} uncompressed ({size} bytes), over the max_size of {human(config.max_size)} "
                f"({config.max_size} bytes) in [tool.gosmall.images.{config.name}]",
            )
        )
    return tuple(findings)


# -- the user -------------------------------------------------------------------------


@dataclass(frozen=True)
class _User:
    text: str  # the config's User, as written
    uid: int | None  # None when a name is not in /etc/passwd
    home: str | None  # from /etc/passwd; None when there is none (or it is "/", which would cover everything)

    @classmethod
    def of(cls, runtime: Mapping[str, Any], root: RootFS) -> _User:
        text = runtime.get("User") if isinstance(runtime.get("User"), str) else ""
        name = str(text).partition(":")[0]
        accounts = _passwd(root)
        if name == "":
            uid: int | None = 0
        elif name.isdigit():
            uid = int(name)
        else:
            uid = next((u for n, u, _ in accounts if n == name), None)
        home = next((h for _, u, h in accounts if u == uid), None) if uid is not None else None
        return cls(str(text), uid, home if home and home != "/" else None)


def _passwd(root: RootFS) -> list[tuple[str, int, str]]:
    entry = root.resolve("/etc/passwd")
    if entry is None or entry.kind != "file":
        return []
    accounts = []
    for line in entry.data.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 6 and fields[2].isdigit():
            accounts.append((fields[0], int(fields[2]), posixpath.normpath(fields[5]) if fields[5].startswith("/") else ""))
    return accounts


def _runs_as_root(user: _User) -> list[str]:
    if user.uid != 0:
        return []
    if not user.text:
        return ["is not set, so the container runs as root"]
    return [f"{redact(user.text, limit=60)!r} runs the container as root (UID 0)"]


# -- rules on each file ------------------------------------------------------------------


def _file_findings(entry: ImageFile, root: RootFS, user: _User) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    name = posixpath.basename(entry.path)
    shell = _shell(entry, name, root)
    if shell:
        out.append(("shell", shell))
    if entry.kind == "file" and entry.mode & 0o6000:
        bits = " and ".join(b for b, mask in (("setuid", 0o4000), ("setgid", 0o2000)) if entry.mode & mask)
        out.append(("setuid", f"is {bits} (mode {entry.mode:04o}, owner {entry.uid}:{entry.gid}): it runs with its owner's privileges"))
    if entry.kind != "symlink" and entry.mode & 0o002 and not (entry.kind == "dir" and entry.path in SCRATCH_DIRS and entry.mode & 0o1000):
        why = f"; {entry.path} is excepted only when sticky (1777)" if entry.path in SCRATCH_DIRS else ""
        out.append(("world-writable", f"is writable by everyone (mode {entry.mode:04o}){why}"))
    if entry.kind != "symlink" and entry.uid != 0 and not _inside(entry.path, user.home):
        home = f"outside {user.home}, the home of the image's user" if user.home else "and the image's user has no home in /etc/passwd"
        out.append(("non-root-owner", f"is owned by UID {entry.uid}, {home}"))
    credential = _credential(entry, name)
    if credential:
        out.append(("credential-file", credential))
    return out


def _shell(entry: ImageFile, name: str, root: RootFS) -> str:
    if name in SHELLS or name in PACKAGE_MANAGERS:
        target = root.resolve(entry.path) if entry.kind == "symlink" else entry
        if target is not None and target.executable:
            what = "a package manager" if name in PACKAGE_MANAGERS else "busybox" if name == "busybox" else "a shell"
            link = f" (a link to {printable(entry.link_target)})" if entry.kind == "symlink" else ""
            return f"is {what}{link}: whoever gets into the container can run it"
    if entry.kind == "file" and entry.data[:4] == MAGIC and _BUSYBOX in entry.data:
        return "is busybox under another name: a shell and a hundred tools in one program"
    return ""


def _inside(path: str, home: str | None) -> bool:
    return home is not None and (path == home or path.startswith(home.rstrip("/") + "/"))


def _credential(entry: ImageFile, name: str) -> str:
    if "/.git/" in entry.path:
        return ""  # the .git directory itself is the finding
    if entry.kind == "dir" and name == ".git":
        return "is a git repository: its history and config can hold credentials and code that was never meant to ship"
    if entry.kind != "file":
        return ""
    if name in CREDENTIAL_NAMES or name.startswith(".env."):
        return "is named like a credential file; build secrets must not ship in an image"
    if entry.path.endswith("/.docker/config.json"):
        return "is a Docker client config, which holds registry credentials"
    if _has_private_key(entry.data):
        return "holds a PEM private key"
    return ""


def _has_private_key(data: bytes) -> bool:
    at = data.find(b"-----BEGIN ")
    while at >= 0:
        begin = _PEM_BEGIN.match(data, at)
        if begin is not None:
            end = data.find(b"-----END " + begin.group(1) + b"PRIVATE KEY-----", begin.end(), begin.end() + _PEM_REACH)
            if end > 0 and _PEM_BODY.fullmatch(data, begin.end(), end):
                return True
        at = data.find(b"-----BEGIN ", at + 1)
    return False


# -- the entrypoint ------------------------------------------------------------------------


def _entrypoint(runtime: Mapping[str, Any], root: RootFS, platform: Platform) -> list[tuple[str, str]]:
    entrypoint, cmd = _strings(runtime.get("Entrypoint")), _strings(runtime.get("Cmd"))
    key, argv = ("Entrypoint", entrypoint) if entrypoint else ("Cmd", cmd)
    if not argv:
        return [("Entrypoint", "neither Entrypoint nor Cmd is set, so the image has nothing to run")]
    program = argv[0]
    workdir = runtime.get("WorkingDir") if isinstance(runtime.get("WorkingDir"), str) and runtime["WorkingDir"].startswith("/") else "/"
    candidates = [posixpath.join(str(workdir), program)] if "/" in program else [posixpath.join(d, program) for d in _path_dirs(runtime)]
    real = next((p for p in map(root.real_path, candidates) if p is not None), None)
    if real is None:
        where = "" if "/" in program else f" on PATH ({':'.join(_path_dirs(runtime))})"
        return [(program, f"{key}[0] is not in the image{where}")]
    entry = root.files[real]
    shown = real if real == program else program
    if entry.kind != "file":
        return [(shown, f"{key}[0] is a {entry.kind}, not a program")]
    if not entry.executable:
        return [(shown, f"{key}[0] is not executable (mode {entry.mode:04o})")]
    return [(shown, message) for message in _program(entry, root, platform, key, runtime)]


def _strings(value: object) -> tuple[str, ...]:
    return tuple(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else ()


def _path_dirs(runtime: Mapping[str, Any]) -> tuple[str, ...]:
    return (
        _env_dirs(runtime, "PATH") if any(e.startswith("PATH=") for e in _strings(runtime.get("Env"))) else tuple(DEFAULT_PATH.split(":"))
    )


def _env_dirs(runtime: Mapping[str, Any], name: str) -> tuple[str, ...]:
    """The absolute directories an Env variable such as PATH lists (relative ones depend on the working directory)."""
    value = next((e.partition("=")[2] for e in _strings(runtime.get("Env")) if e.startswith(f"{name}=")), "")
    return tuple(d for d in value.split(":") if d.startswith("/"))


def _program(entry: ImageFile, root: RootFS, platform: Platform, key: str, runtime: Mapping[str, Any]) -> list[str]:
    if entry.data[:2] == b"#!":
        interpreter = entry.data[2:].split(b"\n", 1)[0].strip().split(b" ", 1)[0].decode("utf-8", "replace")
        found = root.resolve(interpreter) if interpreter.startswith("/") else None
        if found is None or not found.executable:
            return [f"{key}[0] is a script for {printable(interpreter) or 'no interpreter'}, which is not a program in the image"]
        return []
    try:
        facts = read_elf_bytes(entry.data)
    except NotElfError:
        return [f"{key}[0] is neither an ELF program nor a #! script, so the kernel cannot run it"]
    except ElfError as exc:
        return [f"{key}[0] is an ELF file gosmall cannot read ({redact(str(exc), limit=100)})"]
    machine = machine_for_platform(platform)
    if machine is not None and not facts.ident.fits(machine):
        return [f"{key}[0] is a {facts.ident.describe()} program, but the image is for {platform}"]
    if facts.static:
        return []
    return _missing_libraries(entry, root, _env_dirs(runtime, "LD_LIBRARY_PATH"))


def _missing_libraries(entry: ImageFile, root: RootFS, library_path: tuple[str, ...]) -> list[str]:
    """What ld.so would not find for a dynamic entrypoint, looked for by gosmall's own resolver inside the image.

    The resolver reads a tree, so the image's directories, symlinks, ELF files
    and ld.so.conf are written to a temporary one (no other file, no owner, no
    special bit); gosmall's additions (NSS modules for glibc) are not required.
    The image's LD_LIBRARY_PATH is searched where ld.so searches it.
    """
    with tempfile.TemporaryDirectory(prefix="gosmall-audit-") as scratch:
        tree = Path(scratch)
        root.write_tree(tree, lambda f: f.data[:4] == MAGIC or f.path.startswith("/etc/ld.so.conf"))
        try:
            collect_libraries(
                tree / entry.path.lstrip("/"), binary_image_path=entry.path, root=tree, search_paths=tuple(map(Path, library_path))
            )
        except LibraryNotFoundError as missing:
            if missing.reason == "nss":
                return []
            if missing.reason == "interp":
                what = "is not a loader for its machine" if root.resolve(missing.name) is not None else "is not in the image"
                return [f"its loader {printable(missing.name)} (PT_INTERP) {what}"]
            asked = "" if missing.needed_by == entry.path else f" (through {printable(missing.needed_by)})"
            return [f"needs {printable(missing.name)}{asked}, which is not in the image where ld.so looks"]
        except GosmallError as other:
            return [f"its libraries cannot be followed: {redact(other.message.replace(scratch, ''))}"]
    return []


# -- labels and documents ---------------------------------------------------------------------


def _document(data: bytes) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return document if isinstance(document, dict) else {}


def _annotations(document: Mapping[str, Any]) -> dict[str, str]:
    annotations = document.get("annotations")
    return {str(k): str(v) for k, v in annotations.items() if v} if isinstance(annotations, dict) else {}


# -- what the command does with findings ----------------------------------------------------------


def check_allowed(rules: Iterable[str]) -> frozenset[str]:
    """The rule ids of --allow, each one known."""
    for rule in rules:
        if rule not in RULES_BY_ID:
            raise GosmallError(
                f"--allow {printable(rule)!r} is not an audit rule.{did_you_mean(rule, RULES_BY_ID)} "
                f"The rules are: {', '.join(RULES_BY_ID)}."
            )
    return frozenset(rules)


def failing(findings: Iterable[Finding], allowed: Iterable[str] = ()) -> tuple[Finding, ...]:
    """The findings that fail an audit: error level, rule not allowed."""
    allow = frozenset(allowed)
    return tuple(f for f in findings if f.level == "error" and f.rule not in allow)


def format_findings(findings: Sequence[Finding], fmt: Format) -> str:
    if fmt == "json":
        return json.dumps([f.to_json() for f in findings], indent=2)
    return "\n".join(f.line() for f in findings)


def audit_target(target: str) -> tuple[Finding, ...]:
    """The findings for the image TARGET names (see `image_source.read_target`), with its config's rules when it is a project's output."""
    return audit_image(read_target(target), config=configured_image(target))


def configured_image(target: str) -> ImageConfig | None:
    """The [tool.gosmall] image whose output `target` is (its directory, oci/ or image.tar), if any."""
    path = Path(target).expanduser()
    if not path.exists():
        return None
    try:
        project = load_project(path.resolve().parent, images_required=False)
    except NoProjectError:
        return None
    wanted = path.resolve()
    for config in project.images:
        output = project.output_dir(config).resolve()
        if wanted in (output, output / "oci", output / "image.tar"):
            return config
    return None
