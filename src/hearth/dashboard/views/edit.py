"""Edit function: the form filled from the current version; saving makes a new version; delete."""

from hearth.dashboard import editor

editor.render(create=False)
