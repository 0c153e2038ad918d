#!/usr/bin/env bash
# Carry what tunesvc needs to a GPU machine that has no network, and pycuda if asked.
#
# The GPU image already holds NVIDIA's cuda-python (cuda-bindings) and NVRTC, which tunesvc's
# CUDA backend uses first; pycuda is built there only with PYCUDA=1 (minutes of device time).
#
# pycuda publishes no wheels: it is built from its source archive against the
# machine's CUDA toolkit. The GPU machine (Python 3.12, CUDA toolkit, torch,
# numpy, setuptools, wheel; no network) gets the archive plus every missing
# pure-Python or manylinux dependency as wheels in .whl/, which the device tool
# carries (`carry: [".whl"]`).
#
#   tools/gpu_wheels.sh fetch     here, with PyPI: fill .whl/ (ignored by git)
#   tools/gpu_wheels.sh install   on the GPU machine: install .whl/ into /tmp/site,
#                                 building pycuda from source unless .whl/ holds a
#                                 pycuda wheel built earlier; a fresh build is also
#                                 copied to $OUT, so it can come back into .whl/
#                                 and spare the next machine the build
#
# Then, on the GPU machine:
#   export PYTHONPATH=/tmp/site:$PWD
#   python3 -m pytest -m cuda tests/test_cuda_backend.py -q
#   python3 benchmarks/gpu.py
set -euo pipefail

PYCUDA_VERSION=${PYCUDA_VERSION:-2026.1}
WHL=${WHL:-.whl}
SITE=${SITE:-/tmp/site}
# What tunesvc and pycuda need that the GPU machine's image lacks (its package list:
# /work/.library/device/KINDS.md). Their own dependencies are resolved by pip, then
# whatever the image already has is dropped, so no second version shadows the image's.
NEEDED=(pytools platformdirs mako pyopencl optuna sqlite-utils)
IN_IMAGE='^(pip|numpy|typing_extensions|packaging|pyyaml|PyYAML|tqdm|markupsafe|MarkupSafe|tabulate|python_dateutil|six|pluggy|click|colorama|filelock|setuptools|wheel)-'
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)

fetch() {
    local exclude
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qxF "/$WHL/" "$exclude" 2>/dev/null || echo "/$WHL/" >> "$exclude"
    mkdir -p "$WHL/src"
    local tmp
    tmp=$(mktemp -d)
    python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
        -d "$tmp" "${NEEDED[@]}"
    for f in "$tmp"/*.whl; do
        if basename "$f" | grep -Eq "$IN_IMAGE"; then rm "$f"; else mv "$f" "$WHL/"; fi
    done
    # pip prepares an sdist's metadata even with --no-deps, which needs setuptools and wheel:
    # a throwaway venv supplies them, so the project's own environment stays as it is.
    python3 -m venv "$tmp/venv"
    "$tmp/venv/bin/pip" install -q setuptools wheel numpy
    "$tmp/venv/bin/pip" download -q --no-deps --no-binary=:all: --no-build-isolation -d "$WHL/src" "pycuda==$PYCUDA_VERSION"
    rm -rf "$tmp"
    du -sh "$WHL"; ls "$WHL" "$WHL/src"
}

install() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHL"/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    # The image's own cuda-bindings (NVIDIA's cuda-python) and NVRTC serve tunesvc's CUDA backend
    # as they are: pycuda is built only when asked for (PYCUDA=1), to test that binding too.
    if [ "${PYCUDA:-0}" != 1 ] && python3 -c "import cuda.bindings.driver, cuda.bindings.nvrtc" 2>/dev/null; then
        echo "cuda-python: the image's $(python3 -c 'import cuda.bindings; print(cuda.bindings.__version__)'); pycuda not built (PYCUDA=1 builds it)"
        return
    fi
    if python3 -c "import pycuda.driver" 2>/dev/null; then
        echo "pycuda: installed from a carried wheel"
        return
    fi
    local nvcc root build
    nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
    root=$(dirname "$(dirname "$nvcc")")
    build=$(mktemp -d)
    tar xzf "$WHL"/src/pycuda-*.tar.gz -C "$build"
    (
        cd "$build"/pycuda-*
        # configure.py writes siteconf.py (else setup.py waits 10 s and guesses); libcuda comes
        # from the toolkit's stubs at link time and from the driver at run time.
        local curand=--cuda-enable-curand
        ls "$root"/lib64/libcurand.so* >/dev/null 2>&1 || curand=--no-cuda-enable-curand
        python3 configure.py --cuda-root="$root" "$curand"
        MAKEFLAGS=-j"$(nproc)" python3 -m pip wheel -q --no-index --no-deps --no-build-isolation -w "$build/dist" .
    )
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$build"/dist/pycuda-*.whl
    if [ -n "${OUT:-}" ]; then cp "$build"/dist/pycuda-*.whl "$OUT/"; fi
    python3 -c "import pycuda.driver as d; d.init(); print('pycuda', d.get_version(), 'sees', d.Device.count(), 'GPU(s)')"
}

case "${1:-}" in
    fetch) fetch ;;
    install) install ;;
    *) echo "usage: $0 fetch|install (see the comment at the top)" >&2; exit 2 ;;
esac
