"""Maintainability figures of the tree (issue 13): long functions, long modules, ``Any`` in the
application layer's signatures, the mypy settings, and how long the CLI takes to start.

- **functions over 60 lines** and **modules over 400 lines** in the five packages (``models``,
  ``optimizer``, ``executor``, ``scenarios``, ``fbr``): lines counted from the ``def`` (decorators
  left out) to the function's last line, docstring included; modules by physical lines;
- **Any in signatures under fbr/**: parameters and return annotations that mention ``Any``;
- **mypy settings**: the ``[tool.mypy]`` table of pyproject.toml and its overrides;
- **CLI start-up**: wall time of ``fbr --help`` and of ``fbr solve examples/seed_example_1.toml``
  as subprocesses (the median of ``--runs`` runs after one warm-up, so the file cache is warm),
  with Python's bytecode cache on as on any installed copy: ``PYTHONDONTWRITEBYTECODE`` is
  removed from the subprocesses' environment (with it set, every run recompiles the modules the
  warm-up could not cache, about 0.1 s; ``--as-is`` keeps the environment as it is).

Run: ``python benchmarks/code_health.py [--runs 5] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "optimizer", "executor", "scenarios", "fbr")
FUNCTION_LIMIT = 60
MODULE_LIMIT = 400


def python_files(packages: tuple[str, ...] = PACKAGES) -> list[Path]:
    """Every .py file of the packages, sorted."""
    return sorted(f for p in packages for f in (ROOT / p).rglob("*.py"))


def long_functions(limit: int = FUNCTION_LIMIT) -> list[tuple[str, int]]:
    """(module:qualified name, lines) of every function longer than ``limit`` lines."""
    out: list[tuple[str, int]] = []
    for f in python_files():
        tree = ast.parse(f.read_text())
        for name, node in _functions(tree, ""):
            n = (node.end_lineno or node.lineno) - node.lineno + 1
            if n > limit:
                out.append((f"{f.relative_to(ROOT)}:{name}", n))
    return sorted(out, key=lambda x: -x[1])


def _functions(node: ast.AST, prefix: str) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    out: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            out.append((prefix + child.name, child))
            out += _functions(child, prefix + child.name + ".")
        elif isinstance(child, ast.ClassDef):
            out += _functions(child, prefix + child.name + ".")
    return out


def long_modules(limit: int = MODULE_LIMIT) -> list[tuple[str, int]]:
    """(module, lines) of every module longer than ``limit`` lines."""
    out = [(str(f.relative_to(ROOT)), len(f.read_text().splitlines())) for f in python_files()]
    return sorted(((m, n) for m, n in out if n > limit), key=lambda x: -x[1])


def any_in_signatures(package: str = "fbr") -> list[str]:
    """module:function(param) for every annotation mentioning Any in ``package``'s signatures."""
    out: list[str] = []
    for f in python_files((package,)):
        for name, node in _functions(ast.parse(f.read_text()), ""):
            args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            args += [a for a in (node.args.vararg, node.args.kwarg) if a is not None]
            for a in args:
                if a.annotation is not None and _mentions_any(a.annotation):
                    out.append(f"{f.relative_to(ROOT)}:{name}({a.arg})")
            if node.returns is not None and _mentions_any(node.returns):
                out.append(f"{f.relative_to(ROOT)}:{name}(-> return)")
    return out


def _mentions_any(node: ast.AST) -> bool:
    return any((isinstance(n, ast.Name) and n.id == "Any") or
               (isinstance(n, ast.Attribute) and n.attr == "Any") or
               (isinstance(n, ast.Constant) and isinstance(n.value, str) and "Any" in n.value)
               for n in ast.walk(node))


def mypy_settings() -> dict[str, Any]:
    """The [tool.mypy] table (with its overrides) of pyproject.toml."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(data.get("tool", {}).get("mypy", {}))


def cli_seconds(args: list[str], runs: int, as_is: bool = False) -> float:
    """Median wall time (s) of ``fbr ARGS`` as a subprocess, after one warm-up run (bytecode
    caching on unless ``as_is``: see the module docstring)."""
    exe = shutil.which("fbr", path=str(Path(sys.executable).parent)) or "fbr"
    env = dict(os.environ)
    if not as_is:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    times = []
    for k in range(runs + 1):
        t0 = time.perf_counter()
        subprocess.run([exe, *args], cwd=ROOT, capture_output=True, check=False, env=env)
        if k:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs of each CLI command")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--no-timing", action="store_true", help="leave the CLI timings out")
    ap.add_argument("--as-is", action="store_true",
                    help="time the CLI with the environment as it is (PYTHONDONTWRITEBYTECODE kept)")
    args = ap.parse_args(argv)
    funcs, mods, anys = long_functions(), long_modules(), any_in_signatures()
    print(f"functions over {FUNCTION_LIMIT} lines: {len(funcs)}")
    for name, n in funcs:
        print(f"  {n:4d}  {name}")
    print(f"modules over {MODULE_LIMIT} lines: {len(mods)}")
    for name, n in mods:
        print(f"  {n:4d}  {name}")
    print(f"Any in signatures under fbr/: {len(anys)}")
    mypy = mypy_settings()
    print("mypy: " + json.dumps({k: v for k, v in mypy.items() if k != "overrides"}))
    for o in mypy.get("overrides", []):
        print("  override: " + json.dumps(o))
    out: dict[str, Any] = {"long_functions": funcs, "long_modules": mods,
                           "any_in_fbr_signatures": anys, "mypy": mypy}
    if not args.no_timing:
        out["help_s"] = cli_seconds(["--help"], args.runs, args.as_is)
        out["seed_solve_s"] = cli_seconds(["solve", "examples/seed_example_1.toml"], args.runs,
                                          args.as_is)
        print(f"fbr --help: {out['help_s']:.2f} s; fbr solve examples/seed_example_1.toml: "
              f"{out['seed_solve_s']:.2f} s (median of {args.runs})")
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
