"""The audit's rules: ids, levels and what each means, apart from the checks.

Its own module because config.py checks `audit_allow` against these ids, and
audit.py (which reads configs) cannot be imported by config.py without a cycle.
The README's rule table and the SARIF `rules` of `gosmall audit --format sarif`
are both made from this one list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Level = Literal["error", "info"]


@dataclass(frozen=True)
class Rule:
    id: str
    level: Level
    summary: str  # what a finding of it means, one line
    help: str  # why it matters and how to fix it
    checkpoint: str = ""  # the Dockle / CIS Docker Benchmark checkpoint it matches, where one does


RULES = (
    Rule(
        "runs-as-root",
        "error",
        "the config's User is empty, 0 or root (or a name /etc/passwd gives UID 0)",
        'A process that breaks out of a root container is root on the host\'s kernel. Set a non-root user (gosmall: user = "nonroot").',
        "CIS-DI-0001",
    ),
    Rule(
        "shell",
        "error",
        "a shell, busybox or a package manager is in the image",
        "Whoever gets code running in the container gets a shell and tools with it. Ship the program and its runtime files only.",
    ),
    Rule(
        "setuid",
        "error",
        "a file is setuid or setgid",
        "A setuid or setgid program runs with its owner's privileges: a way up for anyone in the container. Clear the bits (chmod u-s,g-s).",
        "CIS-DI-0008",
    ),
    Rule(
        "world-writable",
        "error",
        "a file or directory anyone may write (a sticky /tmp or /var/tmp excepted)",
        "Any user in the container can change what a world-writable path holds. Remove the o+w bit.",
    ),
    Rule(
        "non-root-owner",
        "error",
        "a file owned by a non-root user outside the home of the image's user",
        "The program's user, or another, can rewrite files that should be read-only. Own them by root (0:0).",
    ),
    Rule(
        "entrypoint",
        "error",
        "the entrypoint is missing, not executable, or its loader or libraries are not in the image",
        "The container cannot start. Point Entrypoint at a program in the image and ship every library its loader needs.",
    ),
    Rule(
        "credential-file",
        "error",
        "a private key or credential file (PEM private key, id_rsa, .env, .netrc, .git/, .docker/config.json)",
        "Everyone who can pull the image can read it. Mount secrets at run time instead of shipping them.",
        "CIS-DI-0010",
    ),
    Rule(
        "secret-in-env",
        "error",
        "an Env variable whose name looks like a credential (PASSWORD, TOKEN, SECRET, API_KEY, ...) has a value",
        "The value is in the image config of every copy, readable by anyone who can pull it. Pass it at run time "
        "(docker run -e NAME, a Kubernetes Secret).",
        "CIS-DI-0010",
    ),
    Rule(
        "empty-password",
        "error",
        "an account in /etc/passwd or /etc/shadow that can log in has an empty password field",
        "Anyone can become that user without a password. Lock the account (x in /etc/passwd, ! or * in /etc/shadow) or give it nologin.",
        "DKL-LI-0001",
    ),
    Rule(
        "duplicate-id",
        "error",
        "two accounts or groups share a UID, GID or name",
        "A shared UID or GID makes two names one identity to the kernel, so file ownership no longer says who. Give each its own.",
        "DKL-LI-0002",
    ),
    Rule(
        "unnecessary-file",
        "error",
        "a file nobody needs at run time (.cache/, __pycache__/, *.pyc, *.swp, *~, .DS_Store, Thumbs.db, *.orig, *.rej, VCS leftovers)",
        "Build and editor leftovers make the image bigger and can leak what was never meant to ship. Leave them out of the files you copy in.",
        "DKL-LI-0003",
    ),
    Rule(
        "missing-source-label",
        "info",
        "org.opencontainers.image.source or .revision is neither a label nor an annotation",
        "Without them nobody can tell which commit of which repository the image was built from. gosmall sets them from git "
        "(the origin remote and HEAD).",
    ),
    Rule(
        "proofs",
        "info",
        "what an image in a registry carries beside it: SBOM, provenance, signature (referrers and cosign's tags)",
        "Whoever pulls it can check what is inside and where it came from only with these. gosmall push pushes the SBOM and "
        "provenance; --sign (or gosmall sign) signs and attests.",
    ),
    Rule(
        "no-healthcheck",
        "info",
        "the config has no Healthcheck",
        'The engine cannot tell a running but broken container from a working one. gosmall: healthcheck = ["/app", "healthcheck"].',
        "CIS-DI-0006",
    ),
    Rule(
        "max-size",
        "error",
        "a configured image is over its max_size",
        "The image grew past the budget its [tool.gosmall] table sets. Find what grew (report.json) or raise max_size.",
    ),
)
RULES_BY_ID = {rule.id: rule for rule in RULES}
RULE_IDS = tuple(RULES_BY_ID)
