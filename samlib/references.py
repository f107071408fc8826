"""``package.module:function`` references: a study's own model builder or data loader, named in a params
file or a `samlib.config.Config` (``model``, ``data``) and imported when the config is built, so a
reference to a module that cannot be imported or to a function it lacks is caught up front.

`resolve` imports one; `Reference` is the `samlib.validate` checker of such a key (a built-in name, or a
reference that resolves to a callable).
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Callable, Sequence

from samlib.validate import Checker, ConfigError, invalid

PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")
SYNTAX = "'package.module:function'"


class UnresolvedReference(ValueError):
    """A reference that does not resolve; the message says why (the module or the function)."""


def resolve(reference: str) -> Callable[..., Any]:
    """The callable that ``package.module:function`` names (the module is imported). Raises
    `UnresolvedReference` naming the module that cannot be imported, or the function the module lacks."""
    if not isinstance(reference, str) or not PATTERN.fullmatch(reference):
        raise UnresolvedReference(f"{reference!r} is not of the form {SYNTAX}")
    module_name, function = reference.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UnresolvedReference(f"module {module_name!r} cannot be imported: {err}") from None
    target = getattr(module, function, None)
    if target is None:
        raise UnresolvedReference(f"module {module_name!r} has no function {function!r}")
    if not callable(target):
        raise UnresolvedReference(f"{module_name}.{function} is not callable")
    return target


class Reference(Checker):
    """A built-in name from `builtins`, or a ``package.module:function`` reference that `resolve`s to a
    callable (imported when checked); `what` names it in the message (e.g. "a model builder")."""

    def __init__(self, builtins: Sequence[str], what: str):
        names = ", ".join(builtins)
        allowed = f"{names} or {SYNTAX} ({what})" if names else f"{SYNTAX} ({what})"
        super().__init__(allowed, (str,))
        self.builtins = tuple(builtins)

    def why_not(self, value: Any) -> str | None:
        """Why `value` is refused (the module or function a reference names), or None if it is not."""
        if value is None and self.optional or value in self.builtins:
            return None
        if not isinstance(value, str):
            return f"{value!r} is not a text"
        try:
            resolve(value)
        except UnresolvedReference as err:
            return f"{value!r}: {err}"
        return None

    def accepts(self, value: Any) -> bool:
        return self.why_not(value) is None

    def __call__(self, key: str, value: Any, label: str = "key") -> Any:
        if value is None and self.optional:
            return None
        if not isinstance(value, str):
            raise invalid(key, value, self.allowed, label, of_type=True, error=self.error)
        if value in self.builtins:
            return value
        try:
            resolve(value)
        except UnresolvedReference as err:
            raise invalid(key, value, self.allowed, label, why=str(err), error=self.error) from None
        return value


__all__ = ["PATTERN", "Reference", "UnresolvedReference", "resolve", "ConfigError"]
