"""Documentation stays true: every setting is documented, the README's commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from ehr_backup.config import VARIABLES

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_every_environment_variable_is_in_the_readme_table() -> None:
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", README, re.MULTILINE))
    assert documented == set(VARIABLES)


def test_every_environment_variable_read_by_the_code_is_declared() -> None:
    read = set()
    for path in (ROOT / "ehr_backup").rglob("*.py"):
        read |= set(re.findall(r"""env\.get\(\s*["']([A-Z0-9_]+)["']""", path.read_text()))
        read |= set(re.findall(r"""_int\(env, ["']([A-Z0-9_]+)["']""", path.read_text()))
    assert read <= set(VARIABLES), read - set(VARIABLES)


def test_the_readme_set_up_commands_exist() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", README, re.DOTALL)
    assert blocks[0].strip() == "bash start.sh" and (ROOT / "start.sh").exists()
    assert blocks[1].strip() == "bash .ci/run" and (ROOT / ".ci" / "run").exists()
