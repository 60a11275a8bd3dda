"""Project-wide rules that no single module owns: layering, docstring length, what the docs cite."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cmhcore", "datasets", "methods", "benchmark")
# Each package may import only the packages below it.
BELOW = {"cmhcore": set(), "datasets": {"cmhcore"}, "methods": {"cmhcore", "datasets"},
         "benchmark": {"cmhcore", "datasets", "methods"}}


def _sources(package: str):
    return sorted((ROOT / package).rglob("*.py"))


def _imported_packages(tree: ast.AST) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_layers_only_point_down(package):
    offenders = []
    for path in _sources(package):
        wrong = _imported_packages(ast.parse(path.read_text(encoding="utf-8"))) - BELOW[package] - {package}
        if wrong:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(wrong)}")
    assert not offenders, offenders


@pytest.mark.parametrize("package", PACKAGES)
def test_class_docstrings_are_at_most_40_lines(package):
    long = []
    for path in _sources(package):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                doc = ast.get_docstring(node, clean=False)
                if doc and len(doc.splitlines()) > 40:
                    long.append(f"{path.relative_to(ROOT)}:{node.name} ({len(doc.splitlines())} lines)")
    assert not long, long


def _project_text_files():
    for pattern in ("*.md", "docs/**/*.md", "cmhcore/**/*.py", "datasets/**/*.py", "methods/**/*.py",
                    "benchmark/**/*.py", "benchmark/suites/*.yaml", "scripts/*.py", "tests/**/*.py"):
        yield from ROOT.glob(pattern)


def test_nothing_cites_a_file_outside_the_repository():
    # The project cites its own docs/ pages; files of the workplace around it are not shipped.
    needle = "PROTOCOLS" + ".md"
    hits = [str(p.relative_to(ROOT)) for p in _project_text_files() if needle in p.read_text(encoding="utf-8")]
    assert not hits, hits


def test_relative_links_in_the_docs_resolve():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+://|mailto:|#", target):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken
