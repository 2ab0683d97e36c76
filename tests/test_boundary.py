"""The one boundary: the core (``studio/``) never imports gradio; only ``app.py`` and ``components/`` do."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUDIO = ROOT / "studio"

IMPORT_EVERY_CORE_MODULE = """
import importlib, pkgutil, sys
import studio, studio.cli, studio.api.server, studio.context, studio.inference.manager, studio.models.registry
assert 'gradio' not in sys.modules, 'gradio imported by the core entry points'
imported = 0
for mod in pkgutil.walk_packages(studio.__path__, 'studio.'):
    if mod.name.endswith('__main__'):
        continue  # running it would start the CLI
    importlib.import_module(mod.name)
    imported += 1
    assert 'gradio' not in sys.modules, f'importing {mod.name} imported gradio'
print(imported)
"""


def test_importing_the_core_does_not_import_gradio() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERY_CORE_MODULE], cwd=ROOT, capture_output=True, text=True, timeout=120
    )

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout) > 10  # it really walked the package


def gradio_imports_outside_functions(source: str) -> list[int]:
    """Line numbers of ``import gradio...`` / ``from gradio... import`` that run at import time.

    Imports inside a function body run only when it is called (``studio/cli.py`` imports
    ``gradio.networking`` that way for ``serve --share``), so they are allowed.
    """
    found: list[int] = []

    def is_gradio(name: str | None) -> bool:
        return name is not None and (name == "gradio" or name.startswith("gradio."))

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if (isinstance(child, ast.Import) and any(is_gradio(a.name) for a in child.names)) or (
                isinstance(child, ast.ImportFrom) and child.level == 0 and is_gradio(child.module)
            ):
                found.append(child.lineno)
            visit(child)

    visit(ast.parse(source))
    return found


def test_detector_finds_module_level_imports_and_allows_lazy_ones() -> None:
    source = (
        "import os\n"
        "import gradio as gr\n"
        "if True:\n"
        "    from gradio.components import Textbox\n"
        "class A:\n"
        "    import gradio.themes\n"
        "def share():\n"
        "    from gradio.networking import setup_tunnel\n"
        "import gradio_client\n"
    )
    assert gradio_imports_outside_functions(source) == [2, 4, 6]


def test_no_core_module_imports_gradio_at_import_time() -> None:
    files = sorted(STUDIO.rglob("*.py"))
    assert len(files) > 10

    offenders = {
        str(path.relative_to(ROOT)): lines
        for path in files
        if (lines := gradio_imports_outside_functions(path.read_text(encoding="utf-8")))
    }

    assert offenders == {}
