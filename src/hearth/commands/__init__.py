"""The user commands of the `hearth` CLI (registered in hearth.cli)."""
