"""Audit: hold any image, gosmall's or anyone's, to what a hardened scratch image promises.

`audit_image` takes the one image model (`image.Image`), so the image
`build-small` assembles in memory and an image read from a layout, an
archive, the engine or a registry (`images/source.py`) are audited alike. Each
platform is audited on its config and its flattened file system (`rootfs`);
ELF files are read with `elf.read_elf`, and a dynamic entrypoint's loader and
libraries are looked for with the same resolver the cgo build uses, inside
the image.

Every rule has an id and a level (`audit_rules`, the one list). An "error"
finding fails the audit (exit status 1) unless its rule is allowed (`--allow`,
an image's `audit_allow`); an "info" finding is printed and never changes the
exit status. `build-small` holds each image it assembles to the same rules
before writing anything (`enforce_audit`). Findings print as text lines, JSON,
or SARIF for a code-scanning tab (`sarif`).
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..audit_rules import RULES, RULES_BY_ID, Level
from ..build.libraries import LibraryNotFoundError, collect_libraries
from ..config import MAX_SIZE, ImageConfig, NoProjectError, ProjectConfig, load_project, parse_size
from ..elf import MAGIC, ElfError, NotElfError, machine_for_platform, read_elf_bytes
from ..errors import FOUND, GosmallError, did_you_mean
from ..images.model import Image, Platform, PlatformImage
from ..images.rootfs import ImageFile, RootFS, flatten
from ..images.source import DEFAULT_MAX_LAYER_SIZE, read_target, size_text
from ..leftovers import owned_temporary_directory
from ..publish.report import human
from ..redact import printable, redact
from ..reporter import Reporter
from ..secret_names import credential_word
from .sarif import LogicalLocation, SarifResult, SarifRule, artifact_uri, format_sarif

Format = Literal["text", "json", "sarif"]

MAX_LAYER_SIZE_ENV = "GOSMALL_MAX_LAYER_SIZE"

SOURCE_KEYS = ("org.opencontainers.image.source", "org.opencontainers.image.revision")
SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "busybox", "toybox"})
PACKAGE_MANAGERS = frozenset({"apk", "apt", "apt-get", "aptitude", "dpkg", "rpm", "yum", "dnf", "microdnf", "zypper", "pacman", "opkg"})
CREDENTIAL_NAMES = frozenset({"id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", ".netrc", "_netrc", ".env", ".git-credentials", ".pgpass"})
# Directories and names that serve nobody at run time (a `.git` directory is a credential-file finding).
UNNECESSARY_DIRS = {
    ".cache": "a cache directory a build or a tool left behind",
    "__pycache__": "Python's bytecode cache",
    ".svn": "a Subversion working copy's metadata",
    ".hg": "a Mercurial repository",
    ".bzr": "a Bazaar repository",
    "CVS": "a CVS working copy's metadata",
    ".idea": "an IDE's project settings",
    ".vscode": "an editor's project settings",
}
UNNECESSARY_NAMES = {".DS_Store": "macOS Finder's folder index", "Thumbs.db": "Windows Explorer's thumbnail cache"}
UNNECESSARY_SUFFIXES = (
    (".pyc", "compiled Python bytecode"),
    (".pyo", "compiled Python bytecode"),
    (".swp", "an editor's swap file"),
    (".swo", "an editor's swap file"),
    ("~", "an editor's backup file"),
    (".orig", "a leftover of a merge or a patch"),
    (".rej", "a leftover of a patch that did not apply"),
)
# A login shell ends in one of these when the account cannot log in.
NO_LOGIN = frozenset({"nologin", "false"})
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


def audit_image(image: Image, *, config: ImageConfig | None = None, max_layer_size: int = DEFAULT_MAX_LAYER_SIZE) -> tuple[Finding, ...]:
    """Every finding for every platform of `image`; `config` adds the rules only a configured image has (max_size)."""
    index_annotations = _annotations(_document(image.index.data)) if image.index is not None else {}
    findings: list[Finding] = []
    for platform_image in image.manifests:
        findings += audit_platform(platform_image, index_annotations=index_annotations, config=config, max_layer_size=max_layer_size)
    return tuple(findings)


def audit_platform(
    image: PlatformImage,
    *,
    index_annotations: Mapping[str, str] | None = None,
    config: ImageConfig | None = None,
    max_layer_size: int = DEFAULT_MAX_LAYER_SIZE,
) -> tuple[Finding, ...]:
    platform = str(image.platform)
    runtime = _document(image.config.data).get("config")
    runtime = runtime if isinstance(runtime, dict) else {}
    # A sparse file is the one way a file can be larger than the (capped) layer holding it.
    root = flatten([layer.tar for layer in image.layers], where=platform, max_file_size=max_layer_size)
    user = _User.of(runtime, root)

    def found(rule: str, where: str, message: str) -> Finding:
        return Finding(platform, rule, where, message)

    findings = [found("runs-as-root", "User", message) for message in _runs_as_root(user)]
    # An env key the config allowed (allow_env_secrets) is the only kind with a credential name that reaches its image.
    configured_env = {key for key, _ in config.env} if config is not None else set()
    findings += (found("secret-in-env", f"Env.{name}", message) for name, message in _secrets_in_env(runtime, configured_env))
    for entry in root:
        findings += (found(rule, entry.path, message) for rule, message in _file_findings(entry, root, user))
    findings += (found(rule, where, message) for rule, where, message in _account_findings(root))
    findings += (found("entrypoint", where, message) for where, message in _entrypoint(runtime, root, image.platform, max_layer_size))
    healthcheck = _healthcheck(runtime)
    if healthcheck:
        findings.append(found("no-healthcheck", "Healthcheck", healthcheck))
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
    unnecessary = _unnecessary(entry, name)
    if unnecessary:
        out.append(("unnecessary-file", unnecessary))
    return out


def _unnecessary(entry: ImageFile, name: str) -> str:
    if any(part in UNNECESSARY_DIRS or part == ".git" for part in entry.path.split("/")[1:-1]):
        return ""  # the directory it is in is the finding
    what = ""
    if entry.kind == "dir":
        what = UNNECESSARY_DIRS.get(name, "")
    elif entry.kind in ("file", "symlink"):
        what = UNNECESSARY_NAMES.get(name, "")
        what = what or next((w for suffix, w in UNNECESSARY_SUFFIXES if name.endswith(suffix) and name != suffix), "")
        if not what and (name.startswith(".#") or (len(name) > 2 and name.startswith("#") and name.endswith("#"))):
            what = "an Emacs lock or auto-save file"
    return f"is {what}; nothing needs it at run time" if what else ""


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


# -- the config's Env and Healthcheck ---------------------------------------------------------


def _secrets_in_env(runtime: Mapping[str, Any], allowed: set[str]) -> list[tuple[str, str]]:
    """Credential-looking names with a value; the value is never read past "is it empty", never shown."""
    out = []
    for entry in _strings(runtime.get("Env")):
        name, has_value, value = entry.partition("=")
        word = credential_word(name)
        if word and has_value and value and name not in allowed:
            out.append(
                (
                    redact(name, limit=80),
                    f"looks like a credential ({word}) and has a value, which every copy of the image carries in its config "
                    f"for anyone who can pull it to read; pass it at run time instead (docker run -e {redact(name, limit=80)}, "
                    "a Kubernetes Secret)",
                )
            )
    return out


def _healthcheck(runtime: Mapping[str, Any]) -> str:
    check = runtime.get("Healthcheck")
    test = _strings(check.get("Test")) if isinstance(check, dict) else ()
    if not test:
        return "is not set, so the engine cannot tell a hung program from a working one"
    if test[0] == "NONE":
        return "is disabled (NONE), so the engine cannot tell a hung program from a working one"
    return ""


# -- /etc/passwd, /etc/shadow, /etc/group ------------------------------------------------------


def _account_findings(root: RootFS) -> list[tuple[str, str, str]]:
    passwd, shadow, group = (_account_lines(root, path) for path in ("/etc/passwd", "/etc/shadow", "/etc/group"))
    shells = {fields[0]: fields[6] if len(fields) > 6 else "" for fields in passwd if len(fields) >= 2}
    out: list[tuple[str, str, str]] = []
    for path, lines in (("/etc/passwd", passwd), ("/etc/shadow", shadow)):
        for fields in lines:
            if len(fields) < 2 or fields[1] != "" or fields[0] not in shells:
                continue  # an account /etc/passwd does not have cannot log in
            shell = shells[fields[0]]
            if posixpath.basename(shell) not in NO_LOGIN:
                login = f"the login shell {printable(shell)}" if shell else "no shell field (so /bin/sh)"
                out.append(
                    (
                        "empty-password",
                        path,
                        f"the account {_name(fields[0])} has an empty password field and {login}: anyone can log in as it "
                        "without a password",
                    )
                )
    for path, lines, number in (("/etc/passwd", passwd, "UID"), ("/etc/group", group, "GID")):
        out += (("duplicate-id", path, message) for message in _duplicates(lines, number))
    out += (("duplicate-id", "/etc/shadow", message) for message in _duplicates(shadow, ""))
    return out


def _account_lines(root: RootFS, path: str) -> list[list[str]]:
    entry = root.resolve(path)
    if entry is None or entry.kind != "file":
        return []
    lines = entry.data.decode("utf-8", "replace").splitlines()
    # NIS "+"/"-" lines and comments are not accounts.
    return [line.split(":") for line in lines if line.strip() and not line.startswith(("#", "+", "-"))]


def _duplicates(lines: list[list[str]], number: str) -> list[str]:
    """One message per name listed twice, and per UID or GID (field 3) two names share."""
    names: dict[str, int] = {}
    ids: dict[str, list[str]] = {}
    for fields in lines:
        names[fields[0]] = names.get(fields[0], 0) + 1
        if number and len(fields) > 2 and fields[2].isdigit():
            ids.setdefault(str(int(fields[2])), []).append(fields[0])
    out = [f"the name {_name(name)} is listed {count} times" for name, count in names.items() if count > 1]
    for value, owners in ids.items():
        distinct = list(dict.fromkeys(owners))
        if len(distinct) > 1:
            out.append(f"{number} {value} is shared by {' and '.join(map(_name, distinct))}")
    return out


def _name(name: str) -> str:
    return repr(redact(name, limit=40))


# -- the entrypoint ------------------------------------------------------------------------


def _entrypoint(runtime: Mapping[str, Any], root: RootFS, platform: Platform, max_bytes: int) -> list[tuple[str, str]]:
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
    return [(shown, message) for message in _program(entry, root, platform, key, runtime, max_bytes)]


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


def _program(entry: ImageFile, root: RootFS, platform: Platform, key: str, runtime: Mapping[str, Any], max_bytes: int) -> list[str]:
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
    return _missing_libraries(entry, root, _env_dirs(runtime, "LD_LIBRARY_PATH"), max_bytes)


def _missing_libraries(entry: ImageFile, root: RootFS, library_path: tuple[str, ...], max_bytes: int) -> list[str]:
    """What ld.so would not find for a dynamic entrypoint, looked for by gosmall's own resolver inside the image.

    The resolver reads a tree, so the image's directories, symlinks, ELF files
    and ld.so.conf are written to a temporary one (no other file, no owner, no
    special bit); gosmall's additions (NSS modules for glibc) are not required.
    The image's LD_LIBRARY_PATH is searched where ld.so searches it. No more
    than one layer's cap is written, whatever the image holds.
    """
    with owned_temporary_directory("gosmall-audit-") as tree:
        root.write_tree(
            tree,
            lambda f: f.data[:4] == MAGIC or f.path.startswith("/etc/ld.so.conf"),
            max_bytes=max_bytes,
            why=f"{printable(entry.path)}: checking the libraries it needs",
        )
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
            return [f"its libraries cannot be followed: {redact(other.message.replace(str(tree), ''))}"]
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


def enforce_audit(config: ImageConfig, findings: Iterable[Finding], reporter: Reporter) -> None:
    """build-small's audit of what it built: info findings are told, a finding not in audit_allow stops the build."""
    shown = [f for f in findings if f.rule not in config.audit_allow]
    for finding in shown:
        if finding.level == "info":
            reporter.detail(f"audit: {finding.line()}")
    failed = failing(shown)
    if failed:
        rules = ", ".join(f'"{rule}"' for rule in dict.fromkeys(f.rule for f in failed))
        raise GosmallError(
            f"[tool.gosmall.images.{config.name}]: the image fails its audit, so nothing was written:\n"
            + "\n".join(f.line() for f in failed)
            + f"\nFix what each line names (a file shipped through `files` is left out by removing it from its src), or, "
            f"if it is intended, add audit_allow = [{rules}] to [tool.gosmall.images.{config.name}].",
            code=FOUND,
        )


def failing(findings: Iterable[Finding], allowed: Iterable[str] = ()) -> tuple[Finding, ...]:
    """The findings that fail an audit: error level, rule not allowed."""
    allow = frozenset(allowed)
    return tuple(f for f in findings if f.level == "error" and f.rule not in allow)


@dataclass(frozen=True)
class Anchor:
    """The file a SARIF result about an image points at: code scanning shows nothing without one."""

    uri: str
    line: int = 1


def format_findings(findings: Sequence[Finding], fmt: Format, *, target: str = "image", anchor: Anchor | None = None) -> str:
    """Text lines, a JSON list, or a SARIF log whose results name `target` and point at `anchor` (default: `target` itself)."""
    if fmt == "sarif":
        return format_sarif(SARIF_RULES, [_sarif_result(f, target, anchor or Anchor(artifact_uri(target))) for f in findings])
    if fmt == "json":
        return json.dumps([f.to_json() for f in findings], indent=2)
    return "\n".join(f.line() for f in findings)


SARIF_RULES = tuple(
    SarifRule(
        rule.id,
        "error" if rule.level == "error" else "note",
        rule.summary,
        rule.help,
        {"tags": [rule.checkpoint]} if rule.checkpoint else {},
    )
    for rule in RULES
)


def _sarif_result(finding: Finding, target: str, anchor: Anchor) -> SarifResult:
    where = finding.where
    kind = "resource" if where.startswith("/") else "variable" if where.startswith("Env.") else "property"
    return SarifResult(
        finding.rule,
        "error" if finding.level == "error" else "note",
        f"{printable(where)}: {finding.message}",
        anchor.uri,
        anchor.line,
        logical=LogicalLocation(where, f"{target}:{finding.platform}:{where}", kind),
        properties={"platform": finding.platform},
    )


@dataclass(frozen=True)
class Audit:
    """What `gosmall audit TARGET` found, with the [tool.gosmall] image TARGET is the output of, if it is one."""

    target: str
    findings: tuple[Finding, ...]
    project: ProjectConfig | None = None
    config: ImageConfig | None = None

    @property
    def allowed(self) -> frozenset[str]:
        """The rules the image's audit_allow silences."""
        return frozenset(self.config.audit_allow) if self.config is not None else frozenset()

    def anchor(self, cwd: Path) -> Anchor:
        """A configured image's table in pyproject.toml, else the target's path (or its reference, URI-encoded)."""
        if self.project is not None and self.config is not None:
            header = f"[tool.gosmall.images.{self.config.name}]"
            try:
                lines = self.project.pyproject.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError):
                lines = []
            line = next((n for n, text in enumerate(lines, start=1) if text.strip() == header), 1)
            return Anchor(artifact_uri(_relative(self.project.pyproject, cwd)), line)
        path = Path(self.target).expanduser()
        return Anchor(artifact_uri(_relative(path.resolve(), cwd) if path.exists() else self.target))


def _relative(path: Path, cwd: Path) -> str:
    try:
        return path.relative_to(cwd.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def audit_target(target: str, *, max_layer_size: int = DEFAULT_MAX_LAYER_SIZE) -> Audit:
    """The findings for the image TARGET names (see `images.source.read_target`), with its config's rules when it is a project's output."""
    image = read_target(target, max_layer_size=max_layer_size)
    configured = configured_image(target)
    project, config = configured if configured is not None else (None, None)
    findings = audit_image(image, config=config, max_layer_size=max_layer_size)
    if target.startswith("docker://"):
        findings += proof_findings(target, image.digest)
    return Audit(target, findings, project, config)


def proof_findings(target: str, digest: Any) -> tuple[Finding, ...]:
    """Info findings for what an image in a registry carries beside it: SBOM, provenance, signature, attestations."""
    from ..registry.client import RegistryClient
    from .proofs import carried_proofs, parse_image

    ref = parse_image(target)
    try:
        carried = carried_proofs(RegistryClient.from_environment(), ref, digest)
    except GosmallError as exc:
        # The image itself was read: what could not be listed beside it is said, and does not stop the audit.
        return (Finding("image", "proofs", str(digest), f"its referrers could not be listed: {exc.message}"),)
    # Only what it carries: an image without proofs audits as it did before they existed.
    return tuple(Finding("image", "proofs", proof.where, f"carries {_article(proof.kind)}{proof.kind}") for proof in carried)


def _article(kind: str) -> str:
    return "an " if kind[0] in "AEIOS" else "a "


def max_layer_size(flag: str, environ: Mapping[str, str]) -> int:
    """The most one layer of the audited image may decompress to: --max-layer-size, else GOSMALL_MAX_LAYER_SIZE, else 4 GiB."""
    text, where = (flag, "--max-layer-size") if flag else (environ.get(MAX_LAYER_SIZE_ENV, ""), MAX_LAYER_SIZE_ENV)
    if not text.strip():
        return DEFAULT_MAX_LAYER_SIZE
    size = parse_size(text)
    if size is None or not 0 < size <= MAX_SIZE:
        raise GosmallError(
            f"{where} {printable(text[:40])!r} is not a size from 1 byte to 1 TiB; write a number with a unit B, KB, MB, GB, "
            f"KiB, MiB or GiB, e.g. 16GiB (the default is {size_text(DEFAULT_MAX_LAYER_SIZE)})."
        )
    return size


def configured_image(target: str) -> tuple[ProjectConfig, ImageConfig] | None:
    """The project and the [tool.gosmall] image whose output `target` is (its directory, oci/ or image.tar), if any."""
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
            return project, config
    return None
