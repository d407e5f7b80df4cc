"""The studies compose the library and never import one another: a chapter study may import only its
own modules (``nuclear`` and ``nuclear_findings``, the modules of the ``tlkd`` package) and the shared
support modules."""

from __future__ import annotations

import ast
from pathlib import Path

import kdcourse.studies

STUDIES = Path(kdcourse.studies.__file__).parent
SHARED = {"common", "mnist_teacher"}  # support modules shared by the chapters, not studies


def _chapter(module: str, studies: set[str]) -> str:
    """The study a module belongs to: the top-level name (a package), or the shortest study name that
    is its prefix (``nuclear_findings`` belongs to ``nuclear``)."""
    top = module.split(".")[0]
    owners = [name for name in studies if top == name or top.startswith(f"{name}_")]
    return min(owners, key=len) if owners else top


def _modules() -> dict[str, Path]:
    """Every module under ``kdcourse/studies`` by dotted name relative to it (``tlkd.runner``)."""
    return {".".join(p.relative_to(STUDIES).with_suffix("").parts).removesuffix(".__init__"): p
            for p in STUDIES.rglob("*.py") if p.name != "__init__.py" or p.parent != STUDIES}


def _imported_studies(path: Path) -> set[str]:
    """Names of the modules under ``kdcourse.studies`` that the file at ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "kdcourse.studies":
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("kdcourse.studies."):
                found.add(node.module.removeprefix("kdcourse.studies."))
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("kdcourse.studies.") for a in node.names if a.name.startswith("kdcourse.studies.")}
    return found


def test_no_study_imports_another() -> None:
    modules = _modules()
    studies = {name.split(".")[0] for name in modules} - SHARED
    assert {"mnist_distillation", "mnist_takd", "nuclear", "tlkd"} <= studies
    crossing = {
        (name, imported) for name, path in modules.items() for imported in _imported_studies(path)
        if imported.split(".")[0] not in SHARED and _chapter(imported, studies) != _chapter(name, studies)
    }
    assert not crossing, f"studies importing another study: {sorted(crossing)}"


def test_the_check_sees_an_import_of_another_study(tmp_path: Path) -> None:
    source = tmp_path / "study.py"
    source.write_text("from kdcourse.studies import mnist_distillation, common\nimport kdcourse.studies.mhist\n")
    assert _imported_studies(source) == {"mnist_distillation", "common", "mhist"}
    studies = {"nuclear", "mnist_eskd", "tlkd", "mhist"}
    assert _chapter("nuclear_findings", studies) == "nuclear" and _chapter("tlkd.runner", studies) == "tlkd"
    assert _chapter("mhist", studies) != _chapter("tlkd", studies)
