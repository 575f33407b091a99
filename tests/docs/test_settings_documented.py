"""README.md's Configuration table and `hearth.config.Settings` name the same variables (issue #15).

Every field of `Settings` must appear in the table's first column as its environment variable
(`HEARTH_<FIELD>`; a row may name several, "`HEARTH_HOST` / `HEARTH_PORT`"), and every `HEARTH_...`
variable the table names must be a setting, or one of the few variables read directly from the
environment elsewhere in src (listed below with the module that reads them; the test checks that
module still reads it, and the table documents them too).
"""

from __future__ import annotations

import re

from hearth.config import Settings
from hearth.testing import REPO

# Variables outside `Settings`: name -> the module (below src/) that reads it with os.environ.
READ_ELSEWHERE = {
    "HEARTH_API_URL": "hearth/client.py",  # the API the CLI and the dashboard talk to
    "HEARTH_AWS_SDK_DIR": "hearth/images/aws_sdk.py",  # the AWS SDK layer for Node sandboxes
    "HEARTH_RELAY_CACHE_DIR": "hearth/engine/provided.py",  # built relay binaries of custom runtimes
}

VARIABLE = re.compile(r"\bHEARTH_[A-Z0-9_]*[A-Z0-9]\b")


def configuration_rows() -> list[list[str]]:
    """The cells of README.md's "## Configuration" table, one list per row (header rows left out)."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] in ("variable", "---"):
            continue
        rows.append(cells)
    assert rows, "README.md's Configuration section has no table"
    return rows


def table_variables() -> set[str]:
    """The variables named in the table's first column."""
    named: set[str] = set()
    for cells in configuration_rows():
        found = VARIABLE.findall(cells[0])
        assert found, f"a Configuration row names no HEARTH_ variable: {cells[0]!r}"
        named.update(found)
    return named


def setting_variables() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def test_every_setting_is_in_the_readme_table() -> None:
    missing = sorted((setting_variables() | set(READ_ELSEWHERE)) - table_variables())
    assert not missing, f"settings missing from README.md's Configuration table: {missing}"


def test_every_variable_in_the_readme_table_is_read() -> None:
    unknown = sorted(table_variables() - setting_variables() - set(READ_ELSEWHERE))
    assert not unknown, f"README.md's Configuration table names variables Hearth does not read: {unknown}"


def test_variables_read_elsewhere_are_still_read_there() -> None:
    for variable, module in READ_ELSEWHERE.items():
        source = (REPO / "src" / module).read_text()
        assert re.search(rf"os\.environ(\.get\(|\[)\"{variable}\"", source), f"{module} no longer reads {variable}"
        assert variable not in setting_variables(), f"{variable} is a setting now: drop it from READ_ELSEWHERE"
