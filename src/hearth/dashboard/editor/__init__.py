"""The New / Edit function form: every field of the API, the API's validation errors next to each field.

`form.py` is the page; `state.py` the form's values in session state; `body.py` turns them into the
API's request bodies (pure, unit-tested); `sections.py` draws the form's parts; `actions.py` creates,
saves and deletes.
"""

from hearth.dashboard.editor.form import render

__all__ = ["render"]
