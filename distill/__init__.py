"""distill: ensemble distillation toolkit (teachers, perturbations, students, and the gap between them)."""

__version__ = "0.1.0"


class UserError(Exception):
    """A mistake in what the user gave (a recipe key, a path, a flag).

    The CLI prints the message as one line and exits with code 2; messages name the field, file or flag
    and what was expected.
    """


def unknown(where: str, what: str, name: object, choices: object) -> UserError:
    """The one "unknown name" message of every registry lookup: ``where: unknown <what> 'name'; expected one
    of: a, b, c`` (choices sorted). ``where`` names the recipe key, flag or field; raise the returned error."""
    kind = f"{what} " if what else ""
    return UserError(f"{where}: unknown {kind}{name!r}; expected one of: {', '.join(sorted(map(str, choices)))}")


# The Python API (distill/api.py) re-exported from the package root: `from distill import train_teacher`. Loaded on
# first use (PEP 562), so `import distill` stays light (no torch) and the layers below never import the API.
_API = (
    "DataMeta",
    "distill_student",
    "evaluate",
    "export_run",
    "import_teacher",
    "load",
    "load_recipe",
    "plugin",
    "run",
    "splits",
    "summary",
    "train_teacher",
)


def __getattr__(name: str) -> object:
    if name in _API:
        import importlib

        return getattr(importlib.import_module("distill.api"), name)
    raise AttributeError(f"module 'distill' has no attribute {name!r}")


__all__ = ["UserError", "__version__", "unknown", *_API]
