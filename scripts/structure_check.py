"""Structure limits of the developers' guide, checked (CI runs it; exit status 1 on any finding).

    python scripts/structure_check.py          # every finding not in the allow-list, then a summary
    python scripts/structure_check.py --all    # the allowed ones too, marked "allowed"

What it finds:

- ``module``: a module of the installed package (``safeseek_tl/``) over 400 lines;
- ``function``: a function or method over 60 lines of its own: from its ``def`` line to its last
  line, docstring included, decorators and the lines of functions or classes nested in it left out
  (a nested function is measured on its own);
- ``private``: a private name (``_x``) of a ``safeseek_tl`` module used by another file of the
  package, of the tests, the benchmarks, the scripts or the organism builds: imported
  (``from safeseek_tl.m import _x``, ``from safeseek_tl import _m``), read as an attribute of an
  imported package module (``m._x``), or patched by name (``monkeypatch.setattr(m, "_x", ...)``,
  ``monkeypatch.setattr("safeseek_tl.m._x", ...)``), or a private method of a package class
  called or patched from another file (``objective._row_masks(...)``,
  ``monkeypatch.setattr(SafeSeek, "_validate", ...)``: found by name, since the object's type is
  not known; ``self._x`` and ``cls._x`` are not counted). A private module
  (``safeseek_tl/_io.py``) is internal to the package: its public names may be imported anywhere.

Documented exceptions go in ``scripts/structure_allow.txt``, one a line: the finding as this script
prints it (kind and key, without the part in brackets), then ``#`` and why. An entry that matches nothing is reported too (stale), so the
list shrinks as the code does.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "safeseek_tl"
ALLOW_FILE = ROOT / "scripts" / "structure_allow.txt"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# where a private name of the package may be used from: the package itself and what imports it
IMPORTERS = (PACKAGE, "tests", "benchmarks", "scripts", "organism_builds")


@dataclass(frozen=True)
class Finding:
    kind: str  # module, function, private
    key: str  # what the allow-list names: stable while the code is edited (no line numbers or sizes)
    detail: str  # where and how much, for the reader

    @property
    def name(self) -> str:
        """The finding as the allow-list names it: its kind, then its key."""
        return f"{self.kind} {self.key}"

    def __str__(self) -> str:
        return f"{self.name}  ({self.detail})"


def python_files(root: Path) -> Iterator[Path]:
    for top in IMPORTERS:
        folder = root / top
        if folder.is_dir():
            yield from sorted(p for p in folder.rglob("*.py") if ".mutation" not in p.parts)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


# ---------------------------------------------------------------- sizes
def own_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of ``node`` from its ``def`` to its end, less those of the functions and classes defined in it."""
    total = node.end_lineno - node.lineno + 1
    nested = 0
    stack = list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            first = min([child.lineno] + [d.lineno for d in child.decorator_list])
            nested += child.end_lineno - first + 1
        else:
            stack.extend(ast.iter_child_nodes(child))
    return total - nested


def functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function and method with its dotted name inside the module (``Class.method``, ``outer.inner``)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield prefix + node.name, node
            yield from functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from functions(node, f"{prefix}{node.name}.")
        else:
            yield from functions(node, prefix)


def size_findings(path: Path, relative: str, source: str, tree: ast.AST) -> Iterator[Finding]:
    n_lines = len(source.splitlines())
    if relative.startswith(PACKAGE + "/") and n_lines > MAX_MODULE_LINES:
        yield Finding("module", relative, f"{n_lines} lines")
    for name, node in functions(tree):
        length = own_lines(node)
        if length > MAX_FUNCTION_LINES:
            yield Finding("function", f"{relative}:{name}", f"line {node.lineno}, {length} lines")


# ---------------------------------------------------------------- private names
def package_modules(root: Path) -> set[str]:
    return {module_name(p, root) for p in (root / PACKAGE).rglob("*.py")}


def resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    """The absolute module name of ``from X import ...`` in module ``current``."""
    if not node.level:
        return node.module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(base + ([node.module] if node.module else []))


def module_aliases(tree: ast.AST, current: str, is_package: bool, modules: set[str]) -> dict[str, str]:
    """Local names bound to a package module: ``import safeseek_tl.seek as s``, ``from safeseek_tl import seek``."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules and alias.asname:
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            source = resolve(node, current, is_package)
            for alias in node.names:
                if f"{source}.{alias.name}" in modules:
                    aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
    return aliases


def dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of attribute reads on a name, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


def private_methods(root: Path) -> dict[str, list[str]]:
    """Private method name -> where it is defined (``safeseek_tl.seek.SeekObjective._row_masks``)."""
    defined: dict[str, list[str]] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for cls in (node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)):
            for node in cls.body:
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and is_private(node.name):
                    defined.setdefault(node.name, []).append(f"{module_name(path, root)}.{cls.name}.{node.name}")
    return defined


def private_uses(tree: ast.AST, current: str, is_package: bool, modules: set[str], methods: dict[str, list[str]]) -> Iterator[tuple[str, int]]:
    """``(module._name, line)`` for each private name of another package module this file uses."""
    aliases = module_aliases(tree, current, is_package, modules)

    def owner(expression: str) -> str | None:
        head, _, rest = expression.partition(".")
        full = aliases.get(head, head) + (f".{rest}" if rest else "")
        return full if full in modules else None

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = resolve(node, current, is_package)
            if source in modules and source != current:
                yield from ((f"{source}.{a.name}", node.lineno) for a in node.names if is_private(a.name))
        elif isinstance(node, ast.Attribute) and is_private(node.attr):
            module = owner(dotted(node.value) or "")
            if module and module != current:
                yield f"{module}.{node.attr}", node.lineno
            elif not module and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                elsewhere = [name for name in methods.get(node.attr, []) if not name.startswith(current + ".")]
                if elsewhere and len(elsewhere) == len(methods[node.attr]):
                    yield " | ".join(elsewhere), node.lineno
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "setattr" and node.args:
            target, name = node.args[0], node.args[1] if len(node.args) > 1 else None
            if isinstance(target, ast.Constant) and isinstance(target.value, str):
                module, _, attr = target.value.rpartition(".")
                if module in modules and is_private(attr):
                    yield target.value, node.lineno
            elif isinstance(name, ast.Constant) and isinstance(name.value, str) and is_private(name.value):
                module = owner(dotted(target) or "")
                if module and module != current:
                    yield f"{module}.{name.value}", node.lineno
                elif not module:  # patched on a class or an object: a private method of a package class
                    elsewhere = [found for found in methods.get(name.value, []) if not found.startswith(current + ".")]
                    if elsewhere and len(elsewhere) == len(methods[name.value]):
                        yield " | ".join(elsewhere), node.lineno


def private_findings(path: Path, relative: str, tree: ast.AST, modules: set[str], methods: dict[str, list[str]], root: Path) -> Iterator[Finding]:
    current = module_name(path, root)
    seen: dict[str, list[int]] = {}
    for name, line in private_uses(tree, current, path.name == "__init__.py", modules, methods):
        seen.setdefault(name, []).append(line)
    for name, lines in seen.items():
        yield Finding("private", f"{relative}:{name}", "line " + ", ".join(map(str, sorted(set(lines)))))


# ---------------------------------------------------------------- allow-list
def read_allow(path: Path) -> dict[str, str]:
    """Key -> reason; a line without a reason is an error (an exception must say why)."""
    allowed: dict[str, str] = {}
    if not path.is_file():
        return allowed
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, reason = line.partition("#")
        if not reason.strip():
            raise SystemExit(f"{path}:{number}: {key.strip()!r} has no reason (write it after a '#')")
        allowed[key.strip()] = reason.strip()
    return allowed


def findings(root: Path) -> list[Finding]:
    modules = package_modules(root)
    methods = private_methods(root)
    found: list[Finding] = []
    for path in python_files(root):
        relative = path.relative_to(root).as_posix()
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=relative)
        if relative.startswith(PACKAGE + "/"):
            found += size_findings(path, relative, source, tree)
        found += private_findings(path, relative, tree, modules, methods, root)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="list the allowed findings too")
    parser.add_argument("--allow", type=Path, default=ALLOW_FILE, help="the allow-list file")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to check")
    args = parser.parse_args(argv)
    allowed = read_allow(args.allow)
    found = findings(args.root)
    failing = [f for f in found if f.name not in allowed]
    stale = sorted(set(allowed) - {f.name for f in found})
    for finding in found:
        if finding.name not in allowed:
            print(finding)
        elif args.all:
            print(f"{finding}  allowed: {allowed[finding.name]}")
    for key in stale:
        print(f"stale allow-list entry {key} (nothing matches it; remove it from {args.allow.name})")
    counts = {kind: sum(f.kind == kind for f in failing) for kind in ("module", "function", "private")}
    print(
        f"{counts['module']} modules over {MAX_MODULE_LINES} lines, {counts['function']} functions over {MAX_FUNCTION_LINES} lines, "
        f"{counts['private']} private names used across files, {len(stale)} stale allow-list entries "
        f"({len(found) - len(failing)} findings allowed)"
    )
    return 1 if failing or stale else 0


if __name__ == "__main__":
    sys.exit(main())
