"""The Ray node image (the Dockerfile) built on this machine with podman, with no registry to pull from (needs root).

The base stands in for the official `python:3.11-slim` with its layout: Debian 12 (minbase, from the machine's apt
mirror, by mmdebstrap) and CPython in /usr/local, copied from the interpreter running this script (a Python of its
own prefix, such as pyenv's: Debian 12's python3.11 is 3.11.2, below what the package needs). The Dockerfile is
built on it as users build it, with pip reaching the package index and local wheels as this machine's pip does
(its configuration, CA bundle and wheel folders mounted) and Horovod's wheel cache mounted, so the wheel that
`make test` built is installed, not compiled again. Every image is tagged by a hash of what goes into it: a build
whose inputs have not changed is reused, and a new build removes the images it supersedes and the build stages it
leaves (2 GB each: without that, every change of the sources fills the disk by as much).

    python -m scripts.images [--flavour openmpi|mpich|impi]   # prints the image's name
"""

import argparse
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONTAINERS_CONF = Path(__file__).with_name("containers.conf")
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
# What the official image's Python needs at run time (its lib-dynload), and what pip needs.
BASE_PACKAGES = ["ca-certificates", "netbase", "libssl3", "libffi8", "libsqlite3-0", "libreadline8", "libncursesw6",
                 "libexpat1", "libnsl2", "libtirpc3", "libuuid1"]
TOOLS = ("podman", "buildah", "runc", "mmdebstrap")  # Debian's packages, each with a command of its name
# What the image installs: a change to any of these is a new image.
IMAGE_INPUTS = ["Dockerfile", ".dockerignore", "setup.cfg", "pyproject.toml", "scripts/install-horovod.sh",
                "plugins", "flytekitplugins-raympi", "flyteplugins-raympi"]
S3_SERVER = "moto[server]==5.2.5"
# Every image and build stage built here carries it: what removing our own leftovers is limited to.
LABEL = "org.flytekitplugins-raympi.built-by=scripts.images"
HOROVOD_CACHE = Path(os.environ.get("HOROVOD_WHEEL_CACHE")
                     or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flytekitplugins-raympi")


def podman(*args: str, check: bool = True, timeout: float = 3600) -> subprocess.CompletedProcess:
    """Run podman (runc, no default ulimits: see containers.conf), its output captured; installed first if missing."""
    install_tools()
    done = subprocess.run(["podman", *args], env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)},
                          capture_output=True, text=True, timeout=timeout)
    if check and done.returncode:
        raise RuntimeError(f"podman {shlex.join(args)[:300]} failed ({done.returncode}):\n"
                           f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done


def install_tools() -> None:
    """Debian's podman, buildah, runc and mmdebstrap, installed with apt-get (as root) where missing."""
    missing = [tool for tool in TOOLS if not shutil.which(tool)]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(f"missing {', '.join(missing)}: as root, apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-o", "DPkg::Lock::Timeout=300", *TOOLS]
    if subprocess.run(install, env=env, capture_output=True).returncode:
        subprocess.run(["apt-get", "update"], env=env, check=True, capture_output=True)
        subprocess.run(install, env=env, check=True, capture_output=True)


def exists(image: str) -> bool:
    return podman("image", "exists", image, check=False).returncode == 0


def base_image() -> str:
    """Debian 12 with this interpreter's CPython in /usr/local, as the official python image is laid out."""
    prefix = Path(sys.base_prefix)
    if prefix == Path("/usr"):
        raise RuntimeError(f"{sys.executable} is the system's Python: the base needs a CPython of its own prefix")
    version = sysconfig.get_python_version()
    tag = f"localhost/raympi-base:py{sys.version.split()[0]}-" + _digest(
        [SUITE, MIRROR, *BASE_PACKAGES, sys.version, str(prefix)])
    if exists(tag):
        return tag
    with tempfile.TemporaryDirectory(prefix="raympi-base-") as work:
        python_tar = Path(work, "python.tar")
        lib = f"./lib/python{version}"
        subprocess.run(["tar", "-C", str(prefix), "-cf", str(python_tar), "--exclude=__pycache__",
                        f"--exclude={lib}/site-packages/*", f"--exclude={lib}/test", f"--exclude={lib}/idlelib",
                        f"--exclude={lib}/tkinter", f"--exclude={lib}/turtledemo", "--exclude=./bin/*", "."],
                       check=True)
        binaries = [f"./bin/{name}" for name in (f"python{version}", "python3", "python")
                    if (prefix / "bin" / name).exists()]
        subprocess.run(["tar", "-C", str(prefix), "-rf", str(python_tar), *binaries], check=True)
        rootfs = Path(work, "rootfs.tar")
        subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                        f"--customize-hook=tar-in {python_tar} /usr/local",
                        "--customize-hook=chroot \"$1\" ldconfig", SUITE, str(rootfs), MIRROR],
                       check=True, capture_output=True)
        podman("import", "--change", "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
               "--change", 'CMD ["python3"]', str(rootfs), tag)
    return tag


def node_image(flavour: str = "openmpi", tag: str = None, fresh: bool = False) -> str:
    """The Dockerfile's image for an MPI flavour, built on base_image() (reused when nothing that goes in changed);
    `fresh`: built anew, no layer reused, as `tag`."""
    base = base_image()
    tag = tag or f"localhost/raympi:{flavour}-" + _digest([base, flavour, *_input_files()])
    if fresh or not exists(tag):
        HOROVOD_CACHE.mkdir(parents=True, exist_ok=True)  # a build that compiles Horovod leaves its wheel there
        _build(tag, REPO / "Dockerfile", REPO, f"BASE_IMAGE={base}", "TORCH_INDEX_URL=", f"MPI_FLAVOUR={flavour}",
               mounts=[f"{HOROVOD_CACHE}:/root/.cache/flytekitplugins-raympi"], fresh=fresh)
        if tag.startswith(f"localhost/raympi:{flavour}-"):
            _remove_superseded(tag)
    return tag


def _remove_superseded(tag: str) -> None:
    """The other images of `tag`'s flavour (built from other sources) and the images built on them, except those a
    container still runs."""
    name, flavour = tag.split(":")[0], tag.split(":")[1].split("-")[0]
    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}", f"--filter=reference={name}:{flavour}-*")
    for image in listed.stdout.split():
        if not image.startswith(tag):
            podman("rmi", image, check=False)


def with_packages(image: str, *requirements: str) -> str:
    """`image` with more pip packages, as a user's task image adds its own (reused when built before)."""
    return _built(f"{image}-plus-" + _digest([image, *requirements]),
                  f"FROM {image}\nUSER root\nRUN pip install --no-cache-dir {shlex.join(requirements)}\nUSER 1000\n")


def s3_image() -> str:
    """An S3 server (moto's server mode, from PyPI) on base_image(), for tests: MinIO is not installable here."""
    base = base_image()
    return _built("localhost/raympi-s3:" + _digest([base, S3_SERVER]),
                  f"FROM {base}\nRUN python3 -m venv /opt/s3 && /opt/s3/bin/pip install --no-cache-dir "
                  f"'{S3_SERVER}'\nUSER 65534\n")


def _built(tag: str, containerfile: str) -> str:
    """The image of a Containerfile's text (no build context), built unless it exists."""
    if not exists(tag):
        with tempfile.TemporaryDirectory(prefix="raympi-image-") as context:
            Path(context, "Containerfile").write_text(containerfile)
            _build(tag, Path(context, "Containerfile"), Path(context))
    return tag


def _build(tag: str, file: Path, context: Path, *build_args: str, mounts: list = (), fresh: bool = False) -> None:
    """`podman build` with pip in the build reaching what pip here reaches."""
    with tempfile.TemporaryDirectory(prefix="raympi-pip-") as work:
        volumes = [*mounts, *_pip_mounts(Path(work, "pip.conf"))]
        podman("build", "--network=host", *(["--no-cache"] if fresh else []), f"--label={LABEL}",
               *(f"--build-arg={a}" for a in build_args),
               *(f"--volume={v}" for v in volumes), "--tag", tag, "--file", str(file), str(context))
    # The untagged stages (the first stage's venv with its compiler, cached steps), labelled as the image is.
    podman("image", "prune", "--force", f"--filter=label={LABEL}")


def _pip_mounts(pip_conf: Path) -> list:
    """This machine's pip configuration, all its files merged into `pip_conf`, and the files and folders it names:
    mounts that let pip in a build find what pip finds here (the package index through the CA bundle here, local
    wheels)."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                            check=True).stdout
    settings = {key.split(".", 1)[1]: value.strip().strip("'\"")  # "global.cert='...'", ":env:.cert='...'"
                for key, value in (line.split("=", 1) for line in listed.splitlines() if "=" in line)}
    lines, paths = ["[global]"], set()
    for key, value in settings.items():
        lines.append(f"{key} = {value}")
        # A local index (file://.../simple) links to files beside it: its parent goes in whole.
        paths |= {Path(word.removeprefix("file://")).parent if word.startswith("file://") else Path(word)
                  for word in value.split() if word.startswith(("/", "file:///"))}
    pip_conf.write_text("\n".join(lines) + "\n")
    return [f"{pip_conf}:/etc/pip.conf:ro"] + [f"{p}:{p}:ro" for p in sorted(paths) if p.exists()]


def _input_files() -> list:
    """Each input of the image as 'path:sha256', in a stable order."""
    files = sorted(path for name in IMAGE_INPUTS for path in ([REPO / name] if (REPO / name).is_file() else
                                                              (REPO / name).rglob("*"))
                   if path.is_file() and "__pycache__" not in path.parts and not path.name.endswith(".egg-info"))
    return [f"{path.relative_to(REPO)}:{hashlib.sha256(path.read_bytes()).hexdigest()}" for path in files]


def _digest(parts: list) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flavour", default="openmpi", choices=["openmpi", "mpich", "impi"])
    args = parser.parse_args(argv)
    started = time.monotonic()
    image = node_image(args.flavour)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
    print(f"{image} ({size / 2**20:.0f} MiB; {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
