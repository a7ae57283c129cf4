#!/usr/bin/env python3
"""Checks that sdrt's layers point one way: every #include in src/, include/ and tools/ goes to a folder that the
including file's folder may use (tests/ and bench/ may include anything).

    scripts/check_includes.py            # from anywhere; exit status 1 when a rule is broken
    scripts/check_includes.py FILE...    # only these files (paths relative to the repository or absolute)

Each violation is one line, `file:line: <folder> may not include <path>`. Python 3 standard library only.
"""

import os
import re
import sys

# ---- The rules ------------------------------------------------------------------------------------------------
# Folder -> the folders its files may include. Folders are paths under src/, plus "sdrt" (include/sdrt, the
# public headers, which every folder may include) and "tools". A file belongs to the longest folder in this
# table that contains it (src/models/cuda/unet.cpp is in models/cuda, src/models/unet.h in models); so does
# an included path. Every folder may include its own files. Folders that do not exist yet are listed so that
# they are checked from their first file on.
ALLOWED = {
    "core": ["core"],
    "io": ["core", "io"],
    "text": ["core", "io", "text"],
    "loaders": ["core", "io", "text", "loaders"],
    "schedulers": ["core", "io", "schedulers"],
    "backends/cpu": ["core", "backends/cpu"],
    "backends/cuda": ["core", "backends/cuda"],
    # The backend-free model descriptions (files directly in src/models/).
    "models": ["core", "io", "models"],
    "models/cpu": ["core", "io", "models", "models/cpu", "backends/cpu"],
    "models/cuda": ["core", "io", "models", "models/cuda", "backends/cuda"],
    "engines": ["core", "io", "text", "loaders", "schedulers", "models", "models/cpu", "models/cuda",
                "backends/cpu", "backends/cuda", "engines"],
    # The public API's implementation talks to engines, never to a backend or an executor directly.
    "pipeline": ["core", "io", "text", "loaders", "schedulers", "models", "engines", "pipeline"],
    "sdrt": ["sdrt"],   # include/sdrt: public headers include public headers only
    "tools": ["sdrt"],  # the CLI (and any other tool) uses the public API only
}
# Folders whose files may include a .cuh header (CUDA-only: device code, cuda_runtime.h).
CUH_ALLOWED = {"backends/cuda", "models/cuda", "engines"}
# The public headers' folder, allowed everywhere.
PUBLIC = "sdrt"

SOURCE_SUFFIXES = (".h", ".hpp", ".cpp", ".cu", ".cuh")
CHECKED_ROOTS = ("src", "include", "tools")
INCLUDE_DIRS = ("include", "src")  # the library's -I folders, in order

INCLUDE_RE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')

# ---------------------------------------------------------------------------------------------------------------


def folder_of(path):
    """The table folder of a path relative to src/ (or "sdrt/..."), or None when no folder in the table holds it."""
    parts = path.split("/")[:-1]
    for n in range(len(parts), 0, -1):
        folder = "/".join(parts[:n])
        if folder in ALLOWED:
            return folder
    return None


def file_folder(rel):
    """The folder of a checked file, by its path relative to the repository."""
    if rel.startswith("tools/"):
        return "tools"
    if rel.startswith("include/"):
        return folder_of(rel[len("include/"):])
    if rel.startswith("src/"):
        return folder_of(rel[len("src/"):])
    return None


def strip_comments(text):
    """Blanks out comments and string literals (keeping newlines) so that commented-out includes are not seen."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
        elif c == "#":
            # A preprocessor line is kept whole (its "..." is an include path, not a string literal).
            j = text.find("\n", i)
            j = n if j < 0 else j
            line = text[i:j]
            k = line.find("//")
            out.append(line if k < 0 else line[:k])
            i = j
        elif c == '"' or c == "'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(c + " " * (min(j, n) - i - 1) + (c if j < n and text[j] == c else ""))
            i = j + 1 if j < n and text[j] == c else j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def resolve(root, including_rel, quote, path):
    """The included file as (library path relative to include/ or src/, folder), or None for a file outside the
    library (the standard library, fmt, CUDA, a test helper)."""
    candidates = []
    if quote == '"':  # quoted includes look next to the including file first
        here = os.path.dirname(including_rel)
        candidates.append(os.path.normpath(os.path.join(here, path)))
    candidates += [os.path.normpath(os.path.join(d, path)) for d in INCLUDE_DIRS]
    for cand in candidates:
        cand = cand.replace(os.sep, "/")
        if os.path.isfile(os.path.join(root, cand)):
            for d in INCLUDE_DIRS:
                if cand.startswith(d + "/"):
                    lib_path = cand[len(d) + 1:]
                    return lib_path, PUBLIC if d == "include" else folder_of(lib_path)
            return None  # an existing file outside include/ and src/
    # Not on disk (yet): judge it by its name, so that an include of a file being written is checked too.
    path = os.path.normpath(path).replace(os.sep, "/")
    if path.startswith(PUBLIC + "/"):
        return path, PUBLIC
    folder = folder_of(path)
    return (path, folder) if folder is not None else None


def check_file(root, rel):
    """The violations in one file, as printable lines."""
    folder = file_folder(rel)
    if folder is None:
        return [f"{rel}:1: folder {os.path.dirname(rel)} is not in the include-rule table "
                f"(scripts/check_includes.py)"]
    with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
        text = strip_comments(f.read())
    allowed = set(ALLOWED[folder]) | {folder, PUBLIC}
    problems = []
    for number, line in enumerate(text.split("\n"), start=1):
        m = INCLUDE_RE.match(line)
        if not m:
            continue
        target = resolve(root, rel, m.group(1), m.group(2))
        if target is None:
            continue
        lib_path, target_folder = target
        if target_folder is None or target_folder not in allowed:
            problems.append(f"{rel}:{number}: {folder} may not include {lib_path}")
        elif lib_path.endswith(".cuh") and folder not in CUH_ALLOWED:
            problems.append(f"{rel}:{number}: {folder} may not include {lib_path} (CUDA-only .cuh header)")
    return problems


def source_files(root):
    for top in CHECKED_ROOTS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(SOURCE_SUFFIXES):
                    yield os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")


def main(argv):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if argv:
        files = []
        for arg in argv:
            rel = os.path.relpath(os.path.abspath(arg), root).replace(os.sep, "/")
            if rel.split("/")[0] in CHECKED_ROOTS and rel.endswith(SOURCE_SUFFIXES):
                files.append(rel)
    else:
        files = list(source_files(root))
    problems = []
    for rel in files:
        problems += check_file(root, rel)
    for p in problems:
        print(p)
    if problems:
        print(f"check_includes: {len(problems)} include-rule violation(s) in {len(files)} files "
              f"(rules: scripts/check_includes.py)", file=sys.stderr)
        return 1
    print(f"check_includes: {len(files)} files follow the include rules", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
