"""distill: ensemble distillation toolkit (teachers, perturbations, students, and the gap between them)."""

__version__ = "0.1.0"


class UserError(Exception):
    """A mistake in what the user gave (a recipe key, a path, a flag).

    The CLI prints the message as one line and exits with code 2; messages name the field, file or flag
    and what was expected.
    """
