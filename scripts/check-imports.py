#!/usr/bin/env python3
"""Fails when two files of one crate import each other, directly or round a circle.

Every `crate::…` and `super::…` path a file names (in `use` trees and in code) is resolved to
the file that defines it: the deepest module file on the path, or, for a name the crate root
re-exports (`pub use module::Name` in lib.rs), the file it is re-exported from. Module
declarations (`mod x;`) are the module tree, not imports, and a file's own test module
(`use super::*` inside it) refers to the file itself. Any cycle among the resulting file
edges is printed and the exit status is 1.

Usage: scripts/check-imports.py [crates-dir]   (default: crates)
"""

import os
import re
import sys

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def module_files(src):
    """Module path (tuple) -> file, for every .rs file under src."""
    out = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, src)[:-3].split(os.sep)
            if rel == ["lib"] or rel == ["main"]:
                mod = ()
            elif rel[-1] == "mod":
                mod = tuple(rel[:-1])
            else:
                mod = tuple(rel)
            out[mod] = path
    return out


def expand_use_tree(tree):
    """'a::{b, c::{d, e as f}}' -> ['a::b', 'a::c::d', 'a::c::e'] (aliases dropped, globs kept)."""
    tree = re.sub(r"\s+as\s+" + IDENT, "", tree)
    tree = re.sub(r"\s+", "", tree)
    results = []

    def walk(prefix, s):
        depth, start, parts = 0, 0, []
        for i, ch in enumerate(s):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(s[start:i])
                start = i + 1
        parts.append(s[start:])
        for p in parts:
            if not p:
                continue
            if "{" in p:
                head, rest = p.split("{", 1)
                walk(prefix + head, rest[: rest.rfind("}")])
            else:
                results.append(prefix + p)

    walk("", tree)
    return results


def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def reexports(lib_text):
    """Names the crate root re-exports -> module path they come from."""
    out = {}
    for m in re.finditer(r"pub\s+use\s+([^;]+);", lib_text):
        aliases = dict(re.findall(r"(" + IDENT + r")\s+as\s+(" + IDENT + ")", m.group(1)))
        for path in expand_use_tree(m.group(1)):
            segs = path.split("::")
            if segs[0] in ("crate", "self"):
                segs = segs[1:]
            out[aliases.get(segs[-1], segs[-1])] = tuple(segs[:-1])
    return out


def resolve(segs, modules, roots):
    """The module (file) a crate-absolute path names."""
    segs = [s for s in segs if s and s != "*"]
    best = ()
    for i in range(1, len(segs) + 1):
        if tuple(segs[:i]) in modules:
            best = tuple(segs[:i])
    if best == () and segs and segs[0] in roots:
        return resolve(list(roots[segs[0]]) + segs[1:], modules, {})
    return best


def crate_edges(src):
    modules = module_files(src)
    lib = modules.get(())
    roots = reexports(strip_comments(open(lib).read())) if lib else {}
    edges = {}
    for mod, path in modules.items():
        text = strip_comments(open(path).read())
        targets = set()
        uses = []
        for m in re.finditer(r"(?m)^(\s*)(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", text):
            indented = len(m.group(1)) > 0
            uses += [(indented, p) for p in expand_use_tree(m.group(2))]
        code = re.sub(r"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?use\s+[^;]+;", "", text)
        uses += [(False, m.group(0)) for m in re.finditer(r"\b(?:crate|super)(?:::" + IDENT + r")+", code)]
        is_dir_module = path.endswith("mod.rs") or mod == ()
        # Modules this file declares: a bare `use child::…` (or `self::child::…`) names them.
        children = set(re.findall(r"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*;", text))
        own = list(mod) if is_dir_module else list(mod)
        for indented, p in uses:
            segs = p.split("::")
            if segs[0] == "self" and len(segs) > 1:
                segs = segs[1:]
            if segs[0] in children:
                segs = ["crate"] + own + segs
            if segs[0] == "crate":
                absolute = segs[1:]
            elif segs[0] == "super":
                if indented:
                    continue  # a test module's `super` is this very file
                base = list(mod) if is_dir_module else list(mod[:-1])
                while segs and segs[0] == "super":
                    segs = segs[1:]
                    if segs and segs[0] == "super":
                        base = base[:-1]
                absolute = (base[:-1] if is_dir_module else base) + segs
            else:
                continue
            target = resolve(absolute, modules, roots)
            if target != mod and target in modules:
                targets.add(target)
        edges[mod] = targets
    return modules, edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index:
            strong(v)
    return out


def main():
    crates = sys.argv[1] if len(sys.argv) > 1 else "crates"
    failed = False
    checked = 0
    for name in sorted(os.listdir(crates)):
        src = os.path.join(crates, name, "src")
        if not os.path.isdir(src):
            continue
        modules, edges = crate_edges(src)
        checked += len(modules)
        for comp in cycles(edges):
            failed = True
            files = sorted(os.path.relpath(modules[m]) for m in comp)
            print(f"{name}: files importing each other: {' <-> '.join(files)}")
            for m in comp:
                for t in sorted(edges[m] & set(comp)):
                    print(f"  {os.path.relpath(modules[m])} -> {os.path.relpath(modules[t])}")
    if failed:
        sys.exit(1)
    print(f"no import cycles among {checked} files")


if __name__ == "__main__":
    main()
