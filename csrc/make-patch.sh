#!/usr/bin/env bash
# Regenerates the patches in csrc/ from an edited llama.cpp tree in the build directory:
#   llama-loop.patch  the loop hooks in llama.cpp's src/
#   ggml-fixes.patch  fixes to ggml that loopcpp carries until upstream has them (ggml/src/)
#   llama-server.patch  llama-server's per-request loop choice and request-independent prompt chunks
#
# Workflow: `pip install .` once; edit files under build/<tag>/llama.cpp/{src,ggml/src}; run this
# script; `pip install .` again (the changed patches are re-applied to a fresh copy, and only the
# files they touch recompile).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$(ls -d "$root"/build/*/ | head -n 1)}"
cd "$build"
diff_tree() {  # diff_tree DIR OUT: the pristine-to-patched diff of DIR, with a/ and b/ prefixes
    git diff --no-index --src-prefix=a/ --dst-prefix=b/ "llama.cpp-pristine/$1" "llama.cpp/$1" \
        | sed -e 's#^\(diff --git a/\)llama.cpp-pristine/#\1#' -e 's# b/llama.cpp/# b/#' \
              -e 's#^--- a/llama.cpp-pristine/#--- a/#' -e 's#^+++ b/llama.cpp/#+++ b/#' \
        > "$2" || true
    echo "wrote $2 ($(grep -c '^diff' "$2") files)"
}
diff_tree src "$root/csrc/llama-loop.patch"
diff_tree ggml/src "$root/csrc/ggml-fixes.patch"
diff_tree tools/server "$root/csrc/llama-server.patch"
