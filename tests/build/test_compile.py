"""Stage 2: the compile plan (tags, ldflags, env) and real `go build`s of tiny programs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gosmall.build.compile import binary_name, compile_binary, host_platform, plan_compile
from gosmall.build.prove import read_elf
from gosmall.build.toolchain import GoModule, Toolchain, find_module, find_toolchain
from gosmall.config import ImageConfig, parse_project
from gosmall.errors import GosmallError
from gosmall.images.model import Platform

MAIN_GO = """package main

import "fmt"

var version = "dev"

func main() { fmt.Println("hello", version) }
"""

AMD64 = Platform.parse("linux/amd64")
ARM64 = Platform.parse("linux/arm64")


def go_project(root: Path, package: str = ".", module: str = "example.com/hello", main_go: str = MAIN_GO) -> Path:
    (root / "go.mod").parent.mkdir(parents=True, exist_ok=True)
    (root / "go.mod").write_text(f"module {module}\n\ngo 1.22\n")
    directory = root / package
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.go").write_text(main_go)
    return directory


def image_config(root: Path, package: str = ".", **keys: Any) -> ImageConfig:
    table = {"images": {"app": {"package": package, **keys}}}
    return parse_project(table, root / "pyproject.toml").images[0]


def other_platform() -> Platform:
    return ARM64 if host_platform() != ARM64 else AMD64


@pytest.fixture(scope="module")
def toolchain(tmp_path_factory: pytest.TempPathFactory) -> Toolchain:
    root = tmp_path_factory.mktemp("tc")
    go_project(root)
    return find_toolchain(find_module(root))


# -- plan_compile -------------------------------------------------------------


def test_a_default_plan_is_static_trimmed_and_offline(tmp_path: Path) -> None:
    go_project(tmp_path)
    image = image_config(tmp_path)
    plan = plan_compile(image, find_module(image.package), AMD64, "v1.0.0")
    assert plan.tags == ("netgo", "osusergo")
    assert plan.ldflags == "-s -w"
    assert plan.env() == {"CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": "amd64"}
    assert plan.binary_name == "hello"
    args = plan.args(tmp_path / "out")
    assert args[:3] == ["build", "-trimpath", "-buildvcs=false"]
    assert args[args.index("-tags") + 1] == "netgo,osusergo"


def test_embedded_tzdata_and_build_tags_are_added_once(tmp_path: Path) -> None:
    go_project(tmp_path)
    image = image_config(tmp_path, tzdata="embed", build_tags=["prod", "netgo", "timetzdata"])
    plan = plan_compile(image, find_module(image.package), AMD64, "dev")
    assert plan.tags == ("netgo", "osusergo", "timetzdata", "prod")


def test_user_ldflags_follow_the_trimming_flags_with_the_version_filled_in(tmp_path: Path) -> None:
    go_project(tmp_path)
    image = image_config(tmp_path, ldflags=["-X main.version={version}", "-X main.name=app"])
    plan = plan_compile(image, find_module(image.package), AMD64, "v1.2.3-dirty")
    assert plan.ldflags == "-s -w -X main.version=v1.2.3-dirty -X main.name=app"


@pytest.mark.parametrize(("platform", "goarm"), [("linux/arm/v7", "7"), ("linux/arm/v6", "6")])
def test_arm_variants_set_goarm(tmp_path: Path, platform: str, goarm: str) -> None:
    go_project(tmp_path)
    image = image_config(tmp_path, platforms=[platform])
    env = plan_compile(image, find_module(image.package), Platform.parse(platform), "dev").env()
    assert (env["GOARCH"], env["GOARM"]) == ("arm", goarm)


def test_cgo_for_another_platform_without_a_cc_names_the_compiler_it_needs(tmp_path: Path) -> None:
    go_project(tmp_path)
    target = other_platform()
    image = image_config(tmp_path, cgo=True, platforms=[str(target)])
    with pytest.raises(GosmallError) as caught:
        plan_compile(image, find_module(image.package), target, "dev")
    message = caught.value.message
    assert f"cgo = true and platform {target}, but this machine is {host_platform()}" in message
    cc = {"linux/arm64": "aarch64-linux-gnu-gcc", "linux/amd64": "x86_64-linux-gnu-gcc"}[str(target)]
    assert cc in message and f"apt-get install gcc-{cc.removesuffix('-gcc')}" in message
    assert f'cc = {{ "{target}" = "<compiler>" }}' in message and "[tool.gosmall.images.app]" in message


def test_cgo_for_another_platform_with_a_cc_plans_that_cc(tmp_path: Path) -> None:
    go_project(tmp_path)
    target = other_platform()
    image = image_config(
        tmp_path, cgo=True, platforms=[str(target)], cc={str(target): "my-cross-gcc"}, sysroot={str(target): str(tmp_path)}
    )
    plan = plan_compile(image, find_module(image.package), target, "dev")
    assert plan.tags == () and plan.env()["CC"] == "my-cross-gcc" and plan.env()["CGO_ENABLED"] == "1"


def test_cross_cgo_without_a_sysroot_is_refused_before_compiling(tmp_path: Path) -> None:
    # Found: with cc set, the binary compiled, then collecting libraries failed with "set root to a
    # sysroot", a key that did not exist.
    go_project(tmp_path)
    target = other_platform()
    image = image_config(tmp_path, cgo=True, platforms=[str(target)], cc={str(target): "my-cross-gcc"})
    with pytest.raises(GosmallError) as caught:
        plan_compile(image, find_module(image.package), target, "dev")
    assert f'sysroot = {{ "{target}" = "<dir>" }}' in caught.value.message and "[tool.gosmall.images.app]" in caught.value.message


def test_a_main_package_that_imports_c_is_built_with_cgo(tmp_path: Path) -> None:
    go_project(tmp_path, main_go='package main\n\n// int one(void) { return 1; }\nimport "C"\n\nfunc main() { _ = C.one() }\n')
    image = image_config(tmp_path)
    plan = plan_compile(image, find_module(image.package), host_platform(), "dev")
    assert plan.cgo is True and plan.env()["CGO_ENABLED"] == "1"
    assert "netgo" not in plan.tags


# -- binary_name --------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "package", "name"),
    [
        ("example.com/hello", ".", "hello"),
        ("example.com/hello", "cmd/server", "server"),
        ("example.com/tool/v2", ".", "tool"),
        ("example.com/tool/v2", "cmd/tool-cli", "tool-cli"),
        ("hello", ".", "hello"),
    ],
)
def test_binary_name_is_what_go_build_would_call_it(tmp_path: Path, module: str, package: str, name: str) -> None:
    assert binary_name(tmp_path / package, GoModule(tmp_path, module, (1, 22), False)) == name


# -- real builds --------------------------------------------------------------


@pytest.mark.parametrize("platform", [AMD64, ARM64], ids=str)
def test_a_tiny_main_package_compiles_for_the_platform(tmp_path: Path, toolchain: Toolchain, platform: Platform) -> None:
    package = go_project(tmp_path / "src", "cmd/greeter")
    image = image_config(tmp_path / "src", "cmd/greeter", ldflags=["-X main.version={version}"])
    plan = plan_compile(image, find_module(package), platform, "v9.8.7")
    binary = compile_binary(plan, toolchain, tmp_path / "work")
    assert binary.name == "greeter" and binary.platform == platform and binary.cgo is False
    assert binary.path == tmp_path / "work" / str(platform).replace("/", "_") / "greeter"
    assert binary.size == binary.path.stat().st_size > 0
    facts = read_elf(binary.path)
    assert facts.machine == {"amd64": "EM_X86_64", "arm64": "EM_AARCH64"}[platform.architecture]
    assert facts.static and facts.debug_sections == ()
    if platform == host_platform():
        done = subprocess.run([str(binary.path)], capture_output=True, text=True, timeout=30)
        assert done.stdout == "hello v9.8.7\n"


def test_the_binary_depends_on_the_source_not_where_it_lives(tmp_path: Path, toolchain: Toolchain) -> None:
    first = go_project(tmp_path / "one" / "src")
    second = tmp_path / "elsewhere" / "deeper" / "src"
    shutil.copytree(first, second)
    binaries = []
    for package, work in ((first, tmp_path / "w1"), (second, tmp_path / "w2")):
        plan = plan_compile(image_config(package), find_module(package), AMD64, "v1")
        binaries.append(compile_binary(plan, toolchain, work).path.read_bytes())
    assert binaries[0] == binaries[1]
    assert str(tmp_path).encode() not in binaries[0]


def test_a_compile_error_carries_the_compilers_own_words(tmp_path: Path, toolchain: Toolchain) -> None:
    package = go_project(tmp_path, main_go="package main\n\nfunc main() {\n\tundefinedThing()\n}\n")
    plan = plan_compile(image_config(tmp_path), find_module(package), AMD64, "dev")
    with pytest.raises(GosmallError) as caught:
        compile_binary(plan, toolchain, tmp_path / "work")
    message = caught.value.message
    assert f"go build of {package} for linux/amd64 failed ({toolchain.version_text}, exit 1)" in message
    assert "main.go:4:2: undefined: undefinedThing" in message


def test_a_module_missing_from_the_cache_is_not_downloaded(tmp_path: Path, toolchain: Toolchain, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOPROXY", raising=False)
    package = go_project(tmp_path, main_go='package main\n\nimport "example.com/dep"\n\nfunc main() { dep.X() }\n')
    (tmp_path / "go.mod").write_text("module example.com/hello\n\ngo 1.22\n\nrequire example.com/dep v1.0.0\n")
    fake = "h1:" + "A" * 43 + "="
    (tmp_path / "go.sum").write_text(f"example.com/dep v1.0.0 {fake}\nexample.com/dep v1.0.0/go.mod {fake}\n")
    plan = plan_compile(image_config(tmp_path), find_module(package), AMD64, "dev")
    with pytest.raises(GosmallError) as caught:
        compile_binary(plan, toolchain, tmp_path / "work")
    assert "module lookup disabled by GOPROXY=off" in caught.value.message


def test_a_package_that_is_not_main_is_named_as_such(tmp_path: Path, toolchain: Toolchain) -> None:
    package = go_project(tmp_path, main_go="package hello\n\nfunc X() int { return 1 }\n")
    plan = plan_compile(image_config(tmp_path), find_module(package), AMD64, "dev")
    with pytest.raises(GosmallError, match=r"is it a `package main`\?"):
        compile_binary(plan, toolchain, tmp_path / "work")


def test_platforms_compile_at_once_and_come_back_in_plan_order(tmp_path: Path, toolchain: Toolchain) -> None:
    """Both `go build`s must be running together to get past the barrier; one after the other would time out."""
    import threading

    from gosmall.build.compile import compile_all
    from gosmall.interrupts import run_as_group

    package = go_project(tmp_path / "src")
    image = image_config(tmp_path / "src")
    plans = [plan_compile(image, find_module(package), platform, "dev") for platform in (AMD64, ARM64)]
    together = threading.Barrier(2, timeout=60)

    def runner(args: Any, **options: Any) -> subprocess.CompletedProcess[str]:
        together.wait()
        return run_as_group(args, **options)

    binaries = compile_all(plans, toolchain, tmp_path / "work", runner=runner, jobs=2)
    assert [b.platform for b in binaries] == [AMD64, ARM64]
    assert [read_elf(b.path).machine for b in binaries] == ["EM_X86_64", "EM_AARCH64"]
    for binary in binaries:  # Go's build ID, read from the ELF note as `go tool buildid` reads it
        said = subprocess.run([str(toolchain.executable), "tool", "buildid", str(binary.path)], capture_output=True, text=True, check=True)
        assert binary.build_id == said.stdout.strip() != ""


@pytest.mark.parametrize("uses_c", [True, False])
def test_finding_import_c_in_a_package_with_many_imports_is_quick(tmp_path: Path, uses_c: bool) -> None:
    """One regular expression over the whole import block backtracked for minutes on a few dozen imports."""
    import threading

    from gosmall.build.compile import imports_c

    names = [f'\t"example.com/m/p{i:02d}"' for i in range(40)] + (['\t"C"'] if uses_c else [])
    (tmp_path / "main.go").write_text("package main\n\nimport (\n" + "\n".join(names) + "\n)\n\nfunc main() {}\n")
    answer: list[bool] = []
    worker = threading.Thread(target=lambda: answer.append(imports_c(tmp_path)), daemon=True)
    worker.start()
    worker.join(60)  # generous: it takes microseconds; the old pattern took minutes
    assert answer == [uses_c]
