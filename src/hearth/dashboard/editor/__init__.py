"""The New / Edit function form."""

from hearth.dashboard.editor.sections import render

__all__ = ["render"]
