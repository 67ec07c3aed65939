#!/usr/bin/env bash
# Install Horovod 0.28.1 (PyTorch + Gloo, no MPI/TF/MXNet) into a virtualenv.
#
# Usage: scripts/build_horovod.sh PYTHON
#   PYTHON is the venv's python; it must already have torch installed.
#
# Horovod 0.28.1 ships no wheel, and its sdist asks CMake for C++14 while current
# torch headers need C++17, so the sdist is patched and built here. The built wheel
# is cached under ${XDG_CACHE_HOME:-~/.cache}/tracker-ci/wheels/, keyed by Horovod,
# Python and torch versions (the wheel links against one torch ABI), so later calls
# only run `pip install` on the cached wheel.
#
# Environment:
#   HOROVOD_BUILD_JOBS  parallel compile jobs (default: nproc; Horovod's own default
#                       of -j8 exhausts memory on small CI machines)
set -euo pipefail

readonly HOROVOD_VERSION="0.28.1"

die() {
    printf 'build_horovod: error: %s\n' "$*" >&2
    exit 1
}

log() {
    printf 'build_horovod: %s\n' "$*" >&2
}

if [[ $# -ne 1 ]]; then
    die "usage: $0 PYTHON (the python of a venv that already has torch)"
fi

python_bin=$1
[[ -x "$python_bin" ]] || die "'$python_bin' is not an executable python"

py_version=$("$python_bin" -c 'import sys; print("%d.%d" % sys.version_info[:2])') ||
    die "cannot run '$python_bin'"
torch_version=$("$python_bin" -c 'import torch; print(torch.__version__)' 2>/dev/null) ||
    die "torch is not importable with '$python_bin'; install torch into that venv first"

cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/tracker-ci/wheels
cache_dir=$cache_root/horovod-${HOROVOD_VERSION}-py${py_version}-torch${torch_version}

find_cached_wheel() {
    local candidate
    for candidate in "$cache_dir"/horovod-"$HOROVOD_VERSION"-*.whl; do
        if [[ -f "$candidate" ]]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

install_wheel() {
    log "installing $1"
    # numpy is undeclared by horovod but hvd.allgather_object/broadcast_object call
    # Tensor.numpy(), so they fail at run time without it.
    "$python_bin" -m pip install --disable-pip-version-check "$1" numpy ||
        die "pip install of $1 failed"
    "$python_bin" -c 'import numpy, horovod.torch' ||
        die "horovod installed but 'import horovod.torch' fails; delete $cache_dir and rerun"
    log "horovod $HOROVOD_VERSION ready for $python_bin"
}

if wheel_path=$(find_cached_wheel); then
    install_wheel "$wheel_path"
    exit 0
fi

log "no cached wheel in $cache_dir; building Horovod $HOROVOD_VERSION from source"

# With --no-build-isolation, setup.py imports these from the target venv itself.
missing=()
for module in cmake wheel setuptools packaging numpy; do
    "$python_bin" -c "import $module" 2>/dev/null || missing+=("$module")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing build requirements: ${missing[*]}"
    "$python_bin" -m pip install --disable-pip-version-check "${missing[@]}" ||
        die "could not install build requirements: ${missing[*]}"
fi

venv_bin=$(dirname "$python_bin")
[[ -x "$venv_bin/cmake" ]] || die "cmake was installed but $venv_bin/cmake is missing"

work_dir=$(mktemp -d "${TMPDIR:-/tmp}/horovod-build.XXXXXX")
cleanup() {
    rm -rf "$work_dir"
}
trap cleanup EXIT

log "downloading the horovod==$HOROVOD_VERSION sdist"
"$python_bin" -m pip download --disable-pip-version-check --no-deps --no-binary :all: \
    -d "$work_dir" "horovod==$HOROVOD_VERSION" ||
    die "could not download the horovod==$HOROVOD_VERSION sdist from the package index"

sdist=$work_dir/horovod-$HOROVOD_VERSION.tar.gz
[[ -f "$sdist" ]] || die "pip download did not produce $sdist"
tar -xzf "$sdist" -C "$work_dir" || die "could not unpack $sdist"
src_dir=$work_dir/horovod-$HOROVOD_VERSION

# torch >= 2.1 headers use C++17 features; both files force C++14 and break the build.
for cmake_file in CMakeLists.txt horovod/torch/CMakeLists.txt; do
    target=$src_dir/$cmake_file
    grep -q 'set(CMAKE_CXX_STANDARD 14)' "$target" ||
        die "patch does not apply: no 'set(CMAKE_CXX_STANDARD 14)' in $cmake_file"
    sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' "$target"
    if grep -q 'set(CMAKE_CXX_STANDARD 14)' "$target" ||
        ! grep -q 'set(CMAKE_CXX_STANDARD 17)' "$target"; then
        die "patching $cmake_file to C++17 failed"
    fi
done
log "patched CMakeLists.txt and horovod/torch/CMakeLists.txt to C++17"

jobs=${HOROVOD_BUILD_JOBS:-$(nproc)}
log "building the wheel with $jobs compile jobs (takes several minutes)"
# CMAKE_POLICY_VERSION_MINIMUM: bundled third-party CMake files declare versions
# older than 3.5, which CMake 4 rejects without it.
if ! PATH="$venv_bin:$PATH" \
    HOROVOD_CMAKE="$venv_bin/cmake" \
    MAKEFLAGS="-j$jobs" \
    CMAKE_POLICY_VERSION_MINIMUM=3.5 \
    HOROVOD_WITH_PYTORCH=1 \
    HOROVOD_WITH_GLOO=1 \
    HOROVOD_WITHOUT_MPI=1 \
    HOROVOD_WITHOUT_TENSORFLOW=1 \
    HOROVOD_WITHOUT_MXNET=1 \
    "$python_bin" -m pip wheel --disable-pip-version-check --no-build-isolation --no-deps \
    -w "$work_dir/dist" "$src_dir"; then
    die "building the horovod wheel failed (see the compiler output above)"
fi

built=("$work_dir"/dist/horovod-"$HOROVOD_VERSION"-*.whl)
[[ -f "${built[0]}" ]] || die "pip wheel finished but produced no horovod wheel in $work_dir/dist"
wheel_name=$(basename "${built[0]}")

# Copy to a hidden temp name in the same directory, then rename: a concurrent reader
# either sees no wheel or a complete one, never a partial file.
mkdir -p "$cache_dir" || die "cannot create cache directory $cache_dir"
tmp_wheel=$(mktemp "$cache_dir/.$wheel_name.XXXXXX") || die "cannot write to $cache_dir"
if ! cp "${built[0]}" "$tmp_wheel" || ! chmod 644 "$tmp_wheel" ||
    ! mv -f "$tmp_wheel" "$cache_dir/$wheel_name"; then
    rm -f "$tmp_wheel"
    die "could not store the wheel in $cache_dir"
fi
log "cached $cache_dir/$wheel_name"

install_wheel "$cache_dir/$wheel_name"
