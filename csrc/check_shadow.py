"""Builds the patched llama.cpp files and loopcpp's own sources with -Wshadow (syntax only) and
reports the warnings that fall on lines the patches add or in csrc/. llama.cpp's own code has
shadow warnings of its own (constructor parameters named like members); those are counted, not
reported.

    python csrc/check_shadow.py [BUILD_DIR]     # default: build/<wheel tag>, after pip install -e .

Exit status 1 if the patches or csrc/ add any. Takes about 15 minutes on 2 cores.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATCHES = [ROOT / "csrc" / p for p in ("llama-loop.patch", "ggml-fixes.patch", "llama-server.patch")]
WARNING = re.compile(r"^(.+?):(\d+):\d+: warning: .*\[-Wshadow\]$")


def added_lines() -> dict[str, set[int]]:
    """{path in the tree: the line numbers (in the patched file) that a patch adds}."""
    added: dict[str, set[int]] = defaultdict(set)
    for patch in PATCHES:
        path, n = None, 0
        for line in patch.read_text().splitlines():
            if line.startswith("+++ b/"):
                path = line[6:]
            elif m := re.match(r"@@ -\d+(?:,\d+)? \+(\d+)", line):
                n = int(m.group(1))
            elif path and line.startswith("+"):
                added[path].add(n)
                n += 1
            elif path and (line.startswith(" ") or line == ""):
                n += 1
    return added


def main() -> int:
    build = Path(sys.argv[1]) if len(sys.argv) > 1 else next((ROOT / "build").glob("cp*"))
    tree = build / "llama.cpp"
    flags = ["-std=c++17", "-fsyntax-only", "-Wshadow", "-DGGML_USE_CPU", "-DLLAMA_SHARED", "-DGGML_SHARED",
             *(f"-I{d}" for d in (tree / "src", build / "llama.cpp-build" / "src", tree / "include", ROOT / "csrc" / "include",
                                  ROOT / "csrc", build / "loopcpp-generated", tree / "ggml" / "include"))]
    added = added_lines()
    sources = [tree / p for p in added if p.endswith(".cpp") and p.startswith("src/")]
    sources += sorted((ROOT / "csrc").glob("*.cpp"))
    seen, ours = set(), set()
    for i, src in enumerate(sources, 1):
        print(f"[{i}/{len(sources)}] {src.name}", file=sys.stderr)
        out = subprocess.run(["g++", *flags, str(src)], capture_output=True, text=True).stderr
        for line in out.splitlines():
            if m := WARNING.match(line):
                path = m.group(1).removeprefix(f"{tree}/")
                seen.add(line)
                if path.startswith(str(ROOT / "csrc")) or int(m.group(2)) in added.get(path, ()):
                    ours.add(line)
    print(f"{len(sources)} files: {len(seen)} distinct -Wshadow warnings, {len(ours)} on lines the patches add or in csrc/")
    for line in sorted(ours):
        print(line)
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main())
