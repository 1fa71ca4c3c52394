"""[tool.gosmall]: every key validated, one paragraph per mistake, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from gosmall.config import NONROOT_ID, find_pyproject, load_project, parse_project
from gosmall.errors import GosmallError
from gosmall.images.model import Platform
from tests.conftest import gosmall, make_project

GOOD = """
[tool.gosmall]
output = "out"
platforms = ["linux/arm64"]

[tool.gosmall.images.hello]
package = "./go_app"
repository = "example.com/hello"
ports = [8080, "53/udp"]
user = "1000:2000"
max_size = "12MiB"
smoke = { path = "/ready", expect_status = 204, timeout = "1.5s", env = { A = "b" } }
"""


def write(tmp_path: Path, table: str) -> Path:
    (tmp_path / "go_app").mkdir(exist_ok=True)
    (tmp_path / "pyproject.toml").write_text(table)
    return tmp_path


def error_for(tmp_path: Path, table: str) -> str:
    write(tmp_path, table)
    with pytest.raises(GosmallError) as caught:
        load_project(tmp_path)
    return caught.value.message


def test_a_good_table_becomes_typed_values(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, GOOD))
    (image,) = project.images
    assert project.output == tmp_path / "out"
    assert image.platforms == (Platform("linux", "arm64"),)  # inherited from the top table
    assert image.package == tmp_path / "go_app"
    assert image.ports == ("53/udp", "8080/tcp")
    assert (image.uid, image.gid) == (1000, 2000)
    assert image.max_size == 12 * 1024 * 1024
    assert image.smoke.timeout == 1.5 and image.smoke.expect_status == 204 and image.smoke.env == (("A", "b"),)
    assert image.tags == ("latest",) and image.tzdata == "zip" and project.pinning == "error"


def test_defaults_give_nonroot(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, '[tool.gosmall.images.a]\npackage = "go_app"\n'))
    assert (project.images[0].uid, project.images[0].gid) == (NONROOT_ID, NONROOT_ID)
    assert project.platforms == (Platform("linux", "amd64"),)


def test_config_is_found_by_walking_up(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    nested = tmp_path / "go_app" / "deep"
    nested.mkdir()
    assert find_pyproject(nested) == tmp_path / "pyproject.toml"


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (
            '[tool.gosmall]\noutptu = "x"\n[tool.gosmall.images.a]\npackage = "go_app"\n',
            ["[tool.gosmall] outptu: is not a known key", "Did you mean 'output'?"],
        ),
        (
            '[tool.gosmall.images.a]\npackage = "go_app"\ntzdta = "zip"\n',
            ["[tool.gosmall.images.a] tzdta: is not a known key", "Did you mean 'tzdata'?"],
        ),
        (
            '[tool.gosmall.images.a]\npackage = "go_app"\ncgo = "yes"\n',
            ["[tool.gosmall.images.a] cgo: must be true or false, not a string 'yes'"],
        ),
        ('[tool.gosmall.images.a]\npackage = "go_app"\nports = [true]\n', ["ports[0]: True is not a port"]),
        ('[tool.gosmall.images.a]\npackage = "go_app"\ntags = "latest"\n', ["tags: must be a list of strings, not a string"]),
        (
            '[tool.gosmall.images.a]\npackage = "go_app"\nplatforms = ["linux/amd46"]\n',
            ["platforms[0]: 'linux/amd46' is not a platform gosmall can build", "Did you mean 'linux/amd64'?"],
        ),
        (
            '[tool.gosmall]\nplatforms = ["windows/amd64"]\n[tool.gosmall.images.a]\npackage = "go_app"\n',
            ["[tool.gosmall] platforms[0]: 'windows/amd64'"],
        ),
        ('[tool.gosmall.images.a]\npackage = "./nope"\n', ["package: './nope' is not a directory"]),
        ('[tool.gosmall.images.a]\nrepository = "x/y"\n', ["package: is required"]),
        ('[tool.gosmall.images.a]\npackage = "../elsewhere"\n', ["package: '../elsewhere' points outside the project root"]),
        (
            '[tool.gosmall.images.a]\npackage = "go_app"\nfiles = [{ src = "../etc", dst = "/etc" }]\n',
            ["files[0]] src: '../etc' points outside the project root"],
        ),
        (
            '[tool.gosmall.images.a]\npackage = "go_app"\nfiles = [{ src = "/etc/passwd", dst = "/x" }]\n',
            ["files[0]] src: '/etc/passwd' is absolute"],
        ),
        (
            '[tool.gosmall.images.a]\npackage = "go_app"\nfiles = [{ src = "go_app", dst = "static" }]\n',
            ["files[0]] dst: 'static' must be an absolute path"],
        ),
        ('[tool.gosmall.images.a]\npackage = "go_app"\nuser = "app"\n', ["user: 'app' is not allowed", "UID:GID"]),
        ('[tool.gosmall.images.a]\npackage = "go_app"\ntzdata = "zipped"\n', ["tzdata: 'zipped' is not allowed", "Did you mean 'zip'?"]),
        ('[tool.gosmall.images.a]\npackage = "go_app"\ntzdata = "embed"\nzones = ["Europe/Berlin"]\n', ["zones: only applies to tzdata"]),
        ('[tool.gosmall.images.a]\npackage = "go_app"\nmax_size = "12 parsecs"\n', ["max_size: '12 parsecs' is not a size"]),
        (
            '[tool.gosmall.images.a]\npackage = "go_app"\nrepository = "Example.com/Hello"\n',
            ["repository: 'Example.com/Hello' is not a valid repository name"],
        ),
        (
            '[tool.gosmall.images.a]\npackage = "go_app"\nsmoke = { timeout = "soon" }\n',
            ["[tool.gosmall.images.a.smoke] timeout: 'soon' is not a duration"],
        ),
        (
            '[tool.gosmall.images.a]\npackage = "go_app"\nextra_ca_certs = ["go_app"]\nca_certs = true\n',
            ["extra_ca_certs[0]:", "is not a file"],
        ),
        ('[tool.gosmall]\npinning = "strict"\n[tool.gosmall.images.a]\npackage = "go_app"\n', ["pinning: 'strict' is not allowed"]),
        ("[tool.gosmall]\n", ["images: no image is defined"]),
        ("[tool.gosmall\n", ["is not valid TOML"]),
    ],
)
def test_each_mistake_is_one_paragraph_naming_the_key(tmp_path: Path, table: str, expected: list[str]) -> None:
    message = error_for(tmp_path, table)
    assert str(tmp_path / "pyproject.toml") in message
    for fragment in expected:
        assert fragment in message
    assert "\n\n" not in message and "Traceback" not in message


def test_no_table_anywhere_says_how_to_add_one(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    with pytest.raises(GosmallError, match=r"No pyproject.toml with a \[tool.gosmall\] table"):
        find_pyproject(tmp_path)


def test_unknown_image_name_lists_the_images(tmp_path: Path) -> None:
    project = parse_project({"images": {"hello": {"package": "go_app"}}}, write(tmp_path, GOOD) / "pyproject.toml")
    with pytest.raises(GosmallError, match="there is no image 'helo'.*Did you mean 'hello'"):
        project.image("helo")


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ('"linux/arm64"]', '"linux/amd46"]', "platforms[1]: 'linux/amd46' is not a platform"),
        ('tags = ["latest"]', 'tags = ["latest"]\nfiles = [{ src = "../../etc", dst = "/etc" }]', "points outside the project root"),
        ('tags = ["latest"]', 'tags = ["latest"]\ncolour = "blue"', "colour: is not a known key"),
    ],
)
def test_the_command_reports_bad_config_without_traceback_or_output(tmp_path: Path, old: str, new: str, fragment: str) -> None:
    root = make_project(tmp_path / "p", git=False)
    pyproject = root / "pyproject.toml"
    assert old in pyproject.read_text()
    pyproject.write_text(pyproject.read_text().replace(old, new))
    done = gosmall("build-small", cwd=root)
    assert done.returncode == 2
    assert fragment in done.stderr
    assert done.stderr.startswith("gosmall: error: ")
    assert "Traceback" not in done.stderr + done.stdout
    assert not (root / "dist").exists()


@pytest.mark.parametrize("key", ["DB_PASSWORD", "api_key", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "X_CREDENTIALS", "PASSWD"])
def test_a_credential_in_env_is_refused_naming_the_key_not_the_value(tmp_path: Path, key: str) -> None:
    # Issue 17: a secret set in [tool.gosmall] env would be in every copy of the image.
    message = error_for(tmp_path, f'[tool.gosmall.images.a]\npackage = "go_app"\nenv = {{ {key} = "hunter2-value" }}\n')
    assert f"env.{key}: looks like a credential" in message and "Pass it at run time" in message
    assert "hunter2-value" not in message


@pytest.mark.parametrize("key", ["TOKENIZER_MODE", "PASSWORDLESS", "KEY", "SECRETARY_NAME", "TZ_NAME"])
def test_names_that_only_contain_a_credential_word_are_not_secrets(tmp_path: Path, key: str) -> None:
    load_project(write(tmp_path, f'[tool.gosmall.images.a]\npackage = "go_app"\nenv = {{ {key} = "x" }}\n'))


def test_a_credential_looking_key_can_be_allowed_or_left_empty(tmp_path: Path) -> None:
    table = '[tool.gosmall.images.a]\npackage = "go_app"\nenv = { DB_PASSWORD_FILE_TOKEN = "/run/secrets/db", API_KEY = "" }\n'
    assert "DB_PASSWORD_FILE_TOKEN" in error_for(tmp_path, table)
    allowed = table + 'allow_env_secrets = ["DB_PASSWORD_FILE_TOKEN"]\n'
    (image,) = load_project(write(tmp_path, allowed)).images
    assert dict(image.env)["DB_PASSWORD_FILE_TOKEN"] == "/run/secrets/db"
