#!/usr/bin/env bash
# loopcpp on a CUDA GPU, offline, in one run: build, correctness, speed.
#
#   bash gpu_check.sh TARBALL [WORKDIR] [--cpu]
#
# TARBALL comes from benchmarks/make_gpu_tarball.sh (loopcpp's sources and the pinned llama.cpp
# tree, stripped; no network needed). The script
#   1. unpacks it into WORKDIR (default /tmp/loopcpp-gpu-check) and builds the library with CMake
#      (-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCH, default 90: H100/H200), without
#      llama-server; a second run reuses the build;
#   2. writes random-weight GGUF models with the `gguf` package (benchmarks/gpu_models.py): the tiny
#      f32 model of the tests, and a 28-layer, 2048-wide llama (f16 and Q8_0);
#   3. checks the GPU's logits against the CPU's for every mode x integrator x cache policy x decode
#      mode on the tiny model (prompt split over ubatches, then decode steps);
#   4. benchmarks pp512 and tg128, unlooped and looped, all layers and half the layers offloaded,
#      with the measured time ratios beside the ratios expected from counting layer evaluations;
#   5. prints a short table last.
#
# --cpu (or GPU_CHECK_CPU=1): the same with a CPU build and the CPU as the "device" (the check then
# compares the CPU with itself: bit-identical), and smaller models (4 layers x 512), for machines
# without a GPU. Environment: JOBS (build jobs, default nproc), CUDA_ARCH (default 90), PYTHON
# (default python3; needs numpy and cffi, jinja2/tqdm/gguf/pyyaml are carried in the tarball),
# GPU_CHECK_CMAKE_ARGS (extra configure arguments, e.g. -DCMAKE_CUDA_HOST_COMPILER=g++-13),
# GPU_CHECK_REPS (benchmark rounds, default 3), GPU_CHECK_THREADS (CPU threads,
# default the physical cores), GPU_CHECK_STEPS=build (stop after the build: run
# the build and the checks as two calls; the second finds the build done and rebuilds nothing).
set -euo pipefail
T0=$(date +%s)
CPU=${GPU_CHECK_CPU:-0}
args=()
for a in "$@"; do
    case $a in
        --cpu) CPU=1 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) args+=("$a") ;;
    esac
done
[ ${#args[@]} -ge 1 ] || { echo "usage: $0 TARBALL [WORKDIR] [--cpu]" >&2; exit 2; }
TARBALL=$(realpath "${args[0]}")
W=$(realpath -m "${args[1]:-/tmp/loopcpp-gpu-check}")
PY=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc)}
ARCH=${CUDA_ARCH:-90}
stamp() { echo "[gpu_check $(($(date +%s) - T0)) s] $*"; }

mkdir -p "$W"
stamp "unpacking $TARBALL into $W"
tar -xJf "$TARBALL" -C "$W"   # mtimes are kept: a rebuild after a re-run recompiles nothing
SRC=$W/loopcpp-gpu
BUILD=$W/build-$([ "$CPU" = 1 ] && echo cpu || echo cuda)
INST=$W/install-$([ "$CPU" = 1 ] && echo cpu || echo cuda)

# 1. build
cmake --version | head -1
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
cfg=(-DCMAKE_BUILD_TYPE=Release -DLOOPCPP_LLAMA_SOURCE="$SRC/llama.cpp" -DLOOPCPP_BUILD_SERVER=OFF
     -DLOOPCPP_RPC=OFF -DPython_EXECUTABLE="$(command -v "$PY")"
     -DSKBUILD_PROJECT_VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$SRC/pyproject.toml")")  # the package checks it
if [ "$CPU" = 1 ]; then
    cfg+=(-DGGML_CUDA=OFF)
else
    command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || { echo "no nvcc on PATH or in /usr/local/cuda/bin" >&2; exit 1; }
    command -v nvcc >/dev/null || export PATH=/usr/local/cuda/bin:$PATH
    nvcc --version | tail -2 | head -1
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    cfg+=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH")
fi
# shellcheck disable=SC2206
cfg+=(${GPU_CHECK_CMAKE_ARGS:-})
stamp "configuring $BUILD"
cmake -S "$SRC" -B "$BUILD" "${gen[@]}" "${cfg[@]}" > "$BUILD.configure.log" 2>&1 \
    || { tail -40 "$BUILD.configure.log"; exit 1; }
stamp "building with $JOBS jobs (log: $BUILD.build.log)"
TB=$(date +%s)
cmake --build "$BUILD" -j "$JOBS" > "$BUILD.build.log" 2>&1 || { tail -60 "$BUILD.build.log"; exit 1; }
cmake --install "$BUILD" --component loopcpp --prefix "$INST" > /dev/null
BUILD_S=$(($(date +%s) - TB))
stamp "built in $BUILD_S s: $(ls "$INST/loopcpp/lib" | tr '\n' ' ')"
[ "${GPU_CHECK_STEPS:-all}" = build ] && exit 0

# 2.-5. models, logits check, benchmark, table (the library from this build, loopcpp from the tarball)
export LOOPCPP_LIB_PATH=$INST/loopcpp/lib
export PYTHONPATH=$SRC${PYTHONPATH:+:$PYTHONPATH}
mode=cuda; [ "$CPU" = 1 ] && mode=cpu
exec "$PY" "$SRC/benchmarks/gpu_models.py" --device "$mode" --workdir "$W" --build-seconds "$BUILD_S" \
    --reps "${GPU_CHECK_REPS:-3}" --t0 "$T0" ${GPU_CHECK_THREADS:+--threads "$GPU_CHECK_THREADS"}
