"""The shape of the package's code: long functions, in-function imports, upward imports of the root.

Prints one table (and saves it to ``benchmarks/results/code_shape.txt``):

* the longest function (body lines, docstring excluded) and how many exceed 80 lines;
* modules over 500 lines;
* imports inside functions, split into those of the package itself and
  third-party ones (the CLI's lazy heavy imports are on purpose);
* imports of the package root (``import medsat_sr`` / ``from medsat_sr import X``
  where X is not a submodule) from modules below the CLI.

Usage: ``python benchmarks/code_shape.py [--package medsat_sr] [--root CHECKOUT]``.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LONG_FUNCTION = 80
LONG_MODULE = 500


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if not body:
        return 0
    return int(body[-1].end_lineno or body[-1].lineno) - body[0].lineno + 1


def _is_submodule(package_dir: Path, name: str) -> bool:
    return (package_dir / f"{name}.py").exists() or (package_dir / name / "__init__.py").exists()


def shape(package_dir: Path) -> dict[str, object]:
    """Measure the package under ``package_dir``."""
    pkg = package_dir.name
    functions: list[tuple[int, str]] = []
    whole: list[int] = []  # lines including signature and docstring
    long_modules: list[tuple[int, str]] = []
    own_inner = third_inner = 0
    root_imports: list[str] = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir.parent).as_posix()
        text = path.read_text(encoding="utf-8")
        n_lines = text.count("\n") + 1
        if n_lines > LONG_MODULE:
            long_modules.append((n_lines, rel))
        tree = ast.parse(text)
        below_cli = not (rel.startswith(f"{pkg}/cli/") or rel in (f"{pkg}/__init__.py", f"{pkg}/__main__.py"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((_body_lines(node), f"{rel}:{node.lineno} {node.name}"))
                whole.append(int(node.end_lineno or node.lineno) - node.lineno + 1)
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        mod = inner.module if isinstance(inner, ast.ImportFrom) else inner.names[0].name
                        own = (mod or "").split(".")[0] == pkg or (isinstance(inner, ast.ImportFrom) and inner.level > 0)
                        own_inner += own
                        third_inner += not own
            if below_cli and isinstance(node, ast.ImportFrom) and node.module == pkg:
                if any(not _is_submodule(package_dir, a.name) for a in node.names):
                    root_imports.append(f"{rel}:{node.lineno}")
            if below_cli and isinstance(node, ast.Import) and any(a.name == pkg for a in node.names):
                root_imports.append(f"{rel}:{node.lineno}")
    functions.sort(reverse=True)
    return {
        "longest": functions[0] if functions else (0, "-"),
        "over_80": [f for f in functions if f[0] > LONG_FUNCTION],
        "over_80_whole": sum(n > LONG_FUNCTION for n in whole),
        "long_modules": sorted(long_modules, reverse=True),
        "own_inner": own_inner,
        "third_inner": third_inner,
        "root_imports": root_imports,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", default="medsat_sr")
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout to measure (e.g. an older commit's archive)")
    ap.add_argument("--no-save", action="store_true", help="print only")
    args = ap.parse_args()
    s = shape(args.root / args.package)
    rows = [
        ("longest function (body lines)", f"{s['longest'][0]}  {s['longest'][1]}"),
        (f"functions over {LONG_FUNCTION} lines (body)", str(len(s["over_80"]))),
        (f"functions over {LONG_FUNCTION} lines (with docstring)", str(s["over_80_whole"])),
        (f"modules over {LONG_MODULE} lines", str(len(s["long_modules"]))),
        ("in-function imports of the package", str(s["own_inner"])),
        ("in-function imports, third-party", str(s["third_inner"])),
        ("root imports below the CLI", str(len(s["root_imports"]))),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"code shape of {args.package}/ (python benchmarks/code_shape.py)", ""]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    lines += ["", f"functions over {LONG_FUNCTION} lines:"] + [f"  {n:4d}  {where}" for n, where in s["over_80"]]
    lines += ["", f"modules over {LONG_MODULE} lines:"] + [f"  {n:5d}  {where}" for n, where in s["long_modules"]]
    text = "\n".join(lines)
    print(text)
    if args.no_save:
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "code_shape.txt").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
