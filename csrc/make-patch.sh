#!/usr/bin/env bash
# Regenerates csrc/llama-loop.patch from an edited llama.cpp tree in the build directory.
#
# Workflow: `pip install .` once; edit files under build/<tag>/llama.cpp/src; run this script;
# `pip install .` again (the changed patch is re-applied to a fresh copy, and only the files it
# touches recompile).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$(ls -d "$root"/build/*/ | head -n 1)}"
cd "$build"
git diff --no-index --src-prefix=a/ --dst-prefix=b/ llama.cpp-pristine/src llama.cpp/src \
    | sed -e 's#^\(diff --git a/\)llama.cpp-pristine/#\1#' -e 's# b/llama.cpp/# b/#' \
          -e 's#^--- a/llama.cpp-pristine/#--- a/#' -e 's#^+++ b/llama.cpp/#+++ b/#' \
    > "$root/csrc/llama-loop.patch" || true
echo "wrote $root/csrc/llama-loop.patch ($(grep -c '^diff' "$root/csrc/llama-loop.patch") files)"
