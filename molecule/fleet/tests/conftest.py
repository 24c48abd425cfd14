"""The fleet scenario's tests share one lab, in order; the secrets test must see it all."""

from __future__ import annotations

import pytest

# Searches what every other test left behind (hosts' journals and files, the Ansible output).
LAST = "test_secrets.py"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run test_secrets.py after every other file, whatever order the files were given in."""
    items.sort(key=lambda item: item.path.name == LAST)
