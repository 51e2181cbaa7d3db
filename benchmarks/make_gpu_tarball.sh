#!/usr/bin/env bash
# Packs what benchmarks/gpu_check.sh needs on a GPU machine without network into one tarball:
# loopcpp's build files, C++ sources, patches and Python package, the two benchmark files, the
# tiny-model writer, and the pinned llama.cpp tree (vendor/llama.cpp of the llama-cpp-python
# 0.3.36 sdist, checked by sha256) stripped to what a library build reads: no models, docs, tests,
# examples, web UI, and no ggml backends other than CPU, CUDA, RPC and BLAS.
# Usage: make_gpu_tarball.sh OUT.tar.xz [SDIST]   (SDIST: default ~/.cache/loopcpp/llama_cpp_python-0.3.36.tar.gz)
set -euo pipefail
OUT=$(realpath -m "$1")
REPO=$(cd "$(dirname "$0")/.." && pwd)
SDIST=${2:-${LOOPCPP_CACHE_DIR:-$HOME/.cache/loopcpp}/llama_cpp_python-0.3.36.tar.gz}
SHA=$(sed -n 's/.*LOOPCPP_LLAMA_SDIST_SHA256 "\([0-9a-f]*\)".*/\1/p' "$REPO/CMakeLists.txt")
echo "$SHA  $SDIST" | sha256sum -c --quiet - || { echo "sdist $SDIST does not match sha256 $SHA" >&2; exit 1; }

STAGE=$(mktemp -d); trap 'rm -rf "$STAGE"' EXIT
D=$STAGE/loopcpp-gpu
mkdir -p "$D/benchmarks" "$D/tests" "$D/models"
# loopcpp: build files, sources, package, and the files of the check
cp -a "$REPO"/{CMakeLists.txt,LICENSE,pyproject.toml,README.md,cmake,csrc,loopcpp} "$D/"
cp -p "$REPO/models/catalog.json" "$D/models/"
cp -p "$REPO"/benchmarks/{gpu_check.sh,gpu_models.py} "$D/benchmarks/"
cp -p "$REPO/tests/tinymodels.py" "$D/tests/"
# pure-Python packages loopcpp and the model writer import, for a machine that lacks them (appended
# to sys.path by gpu_models.py, so installed versions win); numpy and cffi must be installed
PY=${PYTHON:-$REPO/.venv/bin/python}; [ -x "$PY" ] || PY=python3
mkdir -p "$D/pydeps"
for m in jinja2 markupsafe tqdm gguf yaml; do
    cp -a "$("$PY" -c "import $m, os; print(os.path.dirname($m.__file__))")" "$D/pydeps/"
done
find "$D/pydeps" -name '*.so' -delete
find "$D" -name __pycache__ -prune -exec rm -rf {} +

# llama.cpp: the parts cmake/llama_source.cmake copies from a tree, then stripped
P=llama_cpp_python-0.3.36/vendor/llama.cpp
tar xzf "$SDIST" -C "$STAGE" $(for p in CMakeLists.txt LICENSE cmake ggml include src vendor licenses common tools scripts; do echo "$P/$p"; done)
mv "$STAGE/$P" "$D/llama.cpp"; rm -rf "$STAGE/llama_cpp_python-0.3.36"
L=$D/llama.cpp
# tools: only the server (loopcpp's llama-server.patch edits it, so it must be there to patch)
find "$L/tools" -mindepth 1 -maxdepth 1 ! -name server ! -name CMakeLists.txt -exec rm -rf {} +
rm -rf "$L/tools/server/tests" "$L/tools/server/public"* "$L/tools/server/webui" "$L/tools/server/themes" \
       "$L/tools/server/bench" "$L/tools/server/README"*.md
cat > "$L/tools/CMakeLists.txt" <<'EOF'
# stripped for the GPU check: only the server (built with LOOPCPP_BUILD_SERVER=ON)
add_subdirectory(server)
EOF
# backends this check never builds (ggml adds a backend's directory only when it is switched on)
for b in cann et hexagon metal opencl openvino sycl virtgpu vulkan webgpu zdnn zendnn; do
    rm -rf "$L/ggml/src/ggml-$b"
done
rm -rf "$L/scripts/"*.py "$L/scripts/"*/
find "$L" \( -name '*.md' -o -name '*.png' -o -name '*.jpg' -o -name '*.gguf' \) -delete

tar -C "$STAGE" -cJf "$OUT" loopcpp-gpu
# the working tree is what is packed: say so when it differs from the commit
dirty=$(git -C "$REPO" status --short -- CMakeLists.txt cmake csrc loopcpp pyproject.toml models/catalog.json \
        benchmarks/gpu_check.sh benchmarks/gpu_models.py tests/tinymodels.py 2>/dev/null || true)
[ -z "$dirty" ] || printf 'note: packed from the working tree, which differs from %s in:\n%s\n' \
    "$(git -C "$REPO" rev-parse --short HEAD)" "$dirty" >&2
echo "$OUT: $(du -h "$OUT" | cut -f1) ($(stat -c %s "$OUT") bytes), $(find "$D" -type f | wc -l) files"
