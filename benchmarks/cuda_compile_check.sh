#!/usr/bin/env bash
# Compile-check loopcpp's CUDA backend without a GPU or a system CUDA toolkit: the toolkit
# (nvcc, cudart, CCCL, cuBLAS) comes from NVIDIA's PyPI wheels, libcuda from a generated stub.
# Usage: cuda_compile_check.sh REPO_ROOT TOOLKIT_DIR BUILD_DIR [LLAMA_SOURCE]
# Needs: python3 -m pip, cmake >= 3.26, ninja, gcc/g++ (<= 14 for nvcc 13.0). Never builds with > 1 job.
set -euo pipefail
REPO=$(realpath "$1"); PREFIX=$2; BUILD=$3; SRC=${4:-}
TK=$PREFIX/nvidia/cu13

# 1. the toolkit from PyPI (~465 MB download, ~840 MB installed), pinned to one CUDA release
if [ ! -x "$TK/bin/nvcc" ]; then
    python3 -m pip install --quiet --no-deps --target "$PREFIX" \
        nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
        nvidia-cuda-runtime==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.0.2.14
fi
# 2. what the wheels lack for a CMake build: unversioned .so links (find_library wants them),
#    lib64 (nvcc.profile links from lib64), and a link-time stub of the driver's libcuda
ln -sfn lib "$TK/lib64"
for l in cudart cublas cublasLt; do ln -sf "lib$l.so.13" "$TK/lib/lib$l.so"; done
if [ ! -f "$TK/lib/stubs/libcuda.so" ]; then
    mkdir -p "$TK/lib/stubs"
    echo '#include <cuda.h>' | gcc -E -P -I"$TK/include" -x c - \
        | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d ' (' | sort -u \
        | awk '{print "int " $1 "(void) { return 999; }"}' > "$TK/lib/stubs/libcuda_stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$TK/lib/stubs/libcuda.so" "$TK/lib/stubs/libcuda_stub.c"
fi
# 3. configure out of tree
extra=()
[ -n "$SRC" ] && extra+=("-DLOOPCPP_LLAMA_SOURCE=$SRC")
cmake -S "$REPO" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=OFF \
    -DCUDAToolkit_ROOT="$TK" -DCMAKE_CUDA_COMPILER="$TK/bin/nvcc" "${extra[@]}" >"$BUILD.configure.log"
# 4. a handful of objects, one job at a time
C=llama.cpp-build/ggml/src/ggml-cuda/CMakeFiles/ggml-cuda.dir
L=llama.cpp-build/src/CMakeFiles/llama.dir
for obj in $C/ggml-cuda.cu.o $C/acc.cu.o $C/norm.cu.o $L/llama-graph.cpp.o \
           "$(ninja -C "$BUILD" -t targets all | grep -oE '^[^:]*/csrc/llama-loop-graph\.cpp\.o')"; do
    TIMEFORMAT="$(basename "$obj") %R s"
    time ninja -C "$BUILD" -j1 "$obj" >/dev/null
done
echo "objects for ggml-cuda: $(ninja -C "$BUILD" -t targets all | grep -cE 'ggml-cuda\.dir/.*\.cu\.o:')"
