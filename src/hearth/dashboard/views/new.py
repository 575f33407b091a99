"""New function: the form, with starter templates."""

from hearth.dashboard import editor

editor.render(create=True)
