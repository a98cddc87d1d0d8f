"""Dependencies point one way: the core never imports export/runtime; runtime imports no TF/Keras.

Static checks over the source (every import statement, module level or inside functions), so a
lazy import deep in a function is caught too.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_facemargin"


def imported_modules(path: pathlib.Path, package: str | None = None) -> set[str]:
    """Absolute names of every module an import statement in ``path`` names (``package``: the
    package ``path`` is in, for relative imports; derived from its place under the package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    if package is None:
        package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if path.name != "__init__.py":
            package = package.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def modules(*parts: str) -> list[pathlib.Path]:
    return sorted((PACKAGE.joinpath(*parts)).rglob("*.py"))


def core_modules() -> list[pathlib.Path]:
    skip = {"export", "runtime", "cli"}
    return [p for p in modules() if p.relative_to(PACKAGE).parts[0] not in skip]


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The checker must be able to fail: imports hidden in a function, relative ones."""
    source = tmp_path / "probe.py"
    source.write_text("import numpy\n"
                      "def f():\n"
                      "    import tensorflow as tf\n"
                      "    from .. import runtime\n"
                      "    from ..export.tflite import to_tflite\n")
    names = imported_modules(source, package="keras_facemargin.losses")
    assert {"numpy", "tensorflow", "keras_facemargin.runtime",
            "keras_facemargin.export.tflite"} <= names


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_never_imports_export_or_runtime(path):
    bad = sorted(name for name in imported_modules(path)
                 if name.startswith(("keras_facemargin.export", "keras_facemargin.runtime")))
    assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


#: the modules of the package the runtime may import (pure Python + NumPy)
TF_FREE = ("keras_facemargin.runtime", "keras_facemargin.preprocessing")


@pytest.mark.parametrize("path", modules("runtime") + [PACKAGE / "preprocessing.py"],
                         ids=lambda p: p.name)
def test_runtime_imports_no_tensorflow_keras_or_core(path):
    bad = sorted(name for name in imported_modules(path)
                 if name.split(".")[0] in ("tensorflow", "keras", "tf_keras")
                 or (name.startswith("keras_facemargin") and not name.startswith(TF_FREE)))
    assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_package_init_imports_no_tensorflow_or_keras_at_module_level():
    """``import keras_facemargin.runtime`` runs the package's __init__ first: it must not
    import Keras or TensorFlow itself (the Keras modules are imported lazily)."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            top.add(node.module)
    assert not any(name.split(".")[0] in ("tensorflow", "keras") for name in top), top


def test_export_layers_need_no_tensorflow():
    """The package maps L2Normalize / HorizontalFlip lazily to export.layers (so load_model finds
    them): that module must stay Keras-only, without TensorFlow."""
    names = imported_modules(PACKAGE / "export" / "layers.py")
    assert not any(name.split(".")[0] == "tensorflow" for name in names), names
