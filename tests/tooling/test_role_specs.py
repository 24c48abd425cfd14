"""One source of truth for every variable: the checks `make lint` runs.

scripts/check_role_specs.py (defaults/main.yml against meta/argument_specs.yml),
scripts/role_docs.py (the roles' README variable tables) and
scripts/app_config_docs.py (app/README.md's configuration tables), each run as
`make lint` runs it: on the repository, and on copies with one planted mistake.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "scripts" / "check_role_specs.py"
DOCS = REPO / "scripts" / "role_docs.py"
APP_DOCS = REPO / "scripts" / "app_config_docs.py"


def run(script: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def copy_roles(tmp_path: Path, *roles: str) -> Path:
    """A repository in tmp_path holding copies of the given roles (e.g. roles/base)."""
    for role in roles:
        shutil.copytree(REPO / role, tmp_path / role)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {path} exactly once"
    path.write_text(text.replace(old, new))


# -- the repository itself -------------------------------------------------------


def test_repository_roles_agree_with_their_specs() -> None:
    result = run(CHECK)
    assert result.returncode == 0, result.stderr
    # Every role of the repository is checked (a role added later counts too).
    specs = "*/meta/argument_specs.yml"
    roles = [p for parent in ("roles", "lab/roles") for p in (REPO / parent).glob(specs)]
    assert len(roles) >= 8
    assert result.stdout.startswith(f"check_role_specs: OK, {len(roles)} roles")


def test_repository_readme_tables_are_current() -> None:
    roles = run(DOCS, "--check")
    assert roles.returncode == 0, roles.stderr
    app = run(APP_DOCS, "--check")
    assert app.returncode == 0, app.stderr


# -- planted mistakes: check_role_specs.py ----------------------------------------


def test_a_default_that_differs_names_role_variable_and_both_values(tmp_path: Path) -> None:
    repo = copy_roles(tmp_path, "roles/base")
    edit(
        repo / "roles/base/defaults/main.yml",
        "base_ssh_max_auth_tries: 3\n",
        "base_ssh_max_auth_tries: 4\n",
    )
    result = run(CHECK, "--repo", repo)
    assert result.returncode == 1
    assert (
        "roles/base: base_ssh_max_auth_tries: defaults/main.yml has 4, "
        "meta/argument_specs.yml has 3"
    ) in result.stderr


def test_a_number_and_a_string_of_it_differ(tmp_path: Path) -> None:
    repo = copy_roles(tmp_path, "roles/base")
    edit(
        repo / "roles/base/defaults/main.yml",
        "base_ssh_max_auth_tries: 3\n",
        'base_ssh_max_auth_tries: "3"\n',
    )
    result = run(CHECK, "--repo", repo)
    assert result.returncode == 1
    assert "roles/base: base_ssh_max_auth_tries: defaults/main.yml has '3'" in result.stderr


def test_a_key_only_in_defaults_is_named(tmp_path: Path) -> None:
    repo = copy_roles(tmp_path, "lab/roles/lab_camera")
    defaults = repo / "lab/roles/lab_camera/defaults/main.yml"
    defaults.write_text(defaults.read_text() + "lab_camera_fps: 5\n")
    result = run(CHECK, "--repo", repo)
    assert result.returncode == 1
    assert re.search(
        r"^lab/roles/lab_camera: lab_camera_fps: in defaults/main.yml but not an option of "
        r"the main entry point",
        result.stderr,
        re.M,
    )


def test_an_option_without_default_is_named(tmp_path: Path) -> None:
    repo = copy_roles(tmp_path, "roles/base")
    edit(
        repo / "roles/base/meta/argument_specs.yml",
        "        type: int\n        default: 3\n",
        "        type: int\n",
    )
    result = run(CHECK, "--repo", repo)
    assert result.returncode == 1
    assert (
        "roles/base: base_ssh_max_auth_tries: meta/argument_specs.yml gives no default and "
        "the option is not required"
    ) in result.stderr


def test_a_spec_default_missing_from_defaults_is_named(tmp_path: Path) -> None:
    repo = copy_roles(tmp_path, "roles/base")
    edit(repo / "roles/base/defaults/main.yml", "base_timezone: Etc/UTC\n", "")
    result = run(CHECK, "--repo", repo)
    assert result.returncode == 1
    assert (
        "roles/base: base_timezone: meta/argument_specs.yml has default Etc/UTC, "
        "defaults/main.yml has nothing"
    ) in result.stderr


def test_entry_points_that_disagree_are_named(tmp_path: Path) -> None:
    repo = copy_roles(tmp_path, "roles/detector_app")
    spec = repo / "roles/detector_app/meta/argument_specs.yml"
    text = spec.read_text()
    rollback = text.index("  rollback:")
    head, tail = text[:rollback], text[rollback:]
    tail = tail.replace("        default: 120\n", "        default: 60\n", 1)
    spec.write_text(head + tail)
    result = run(CHECK, "--repo", repo)
    assert result.returncode == 1
    assert (
        "roles/detector_app: detector_app_ready_timeout_s: entry point main has default 120, "
        "entry point rollback has 60"
    ) in result.stderr
    assert (
        "roles/detector_app: detector_app_ready_timeout_s: defaults/main.yml has 120, "
        "entry point rollback has 60"
    ) in result.stderr


def test_a_fallback_that_no_longer_matches_its_owner_is_named(tmp_path: Path) -> None:
    # detector_app runs as base's account: "{{ base_service_user | default('rvm') }}".
    repo = copy_roles(tmp_path, "roles/base", "roles/detector_app")
    edit(
        repo / "roles/base/defaults/main.yml",
        "base_service_user: rvm\n",
        "base_service_user: detector\n",
    )
    edit(
        repo / "roles/base/meta/argument_specs.yml",
        "      base_service_user:\n        type: str\n        default: rvm\n",
        "      base_service_user:\n        type: str\n        default: detector\n",
    )
    result = run(CHECK, "--repo", repo)
    assert result.returncode == 1
    assert (
        "roles/detector_app: detector_app_user: falls back to rvm for base_service_user, but "
        "roles/base/defaults/main.yml has detector"
    ) in result.stderr
    assert "roles/base:" not in result.stderr  # base itself is consistent


# -- planted mistakes: the generated tables ----------------------------------------


def test_a_stale_role_readme_is_named_with_its_first_differing_line(tmp_path: Path) -> None:
    repo = copy_roles(tmp_path, "roles/base")
    edit(
        repo / "roles/base/meta/argument_specs.yml",
        "description: sshd MaxAuthTries (1-10).",
        "description: sshd MaxAuthTries (1 to 10).",
    )
    stale = run(DOCS, "--check", "--repo", repo)
    assert stale.returncode == 1
    assert stale.stderr.startswith("roles/base/README.md: variable tables are stale (line ")
    assert "sshd MaxAuthTries (1-10)." in stale.stderr  # what the README has
    assert "sshd MaxAuthTries (1 to 10)." in stale.stderr  # what would be generated

    assert run(DOCS, "--write", "--repo", repo).returncode == 0
    assert run(DOCS, "--check", "--repo", repo).returncode == 0
    readme = (repo / "roles/base/README.md").read_text()
    assert "| `base_ssh_max_auth_tries` | int | `3` | sshd MaxAuthTries (1 to 10). |" in readme
    assert "## Tags" in readme, "the prose around the table is kept"


def test_a_hand_edited_role_table_is_stale(tmp_path: Path) -> None:
    repo = copy_roles(tmp_path, "roles/jetpack")
    edit(
        repo / "roles/jetpack/README.md",
        "| `jetpack_soc` | str | `t234` |",
        "| `jetpack_soc` | str | `t194` |",
    )
    stale = run(DOCS, "--check", "--repo", repo)
    assert stale.returncode == 1
    assert "roles/jetpack/README.md: variable tables are stale" in stale.stderr


def test_a_stale_app_config_table_fails(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    shutil.copy(REPO / "app" / "README.md", readme)
    edit(readme, "| `queue_size` | `2` |", "| `queue_size` | `4` |")
    stale = run(APP_DOCS, "--check", "--readme", readme)
    assert stale.returncode == 1
    assert f"{readme}: configuration tables are stale (line " in stale.stderr
    assert "`queue_size` | `4`" in stale.stderr and "`queue_size` | `2`" in stale.stderr
    assert run(APP_DOCS, "--write", "--readme", readme).returncode == 0
    assert readme.read_text() == (REPO / "app" / "README.md").read_text()


@pytest.mark.parametrize("marker", ["<!-- BEGIN CONFIG", "<!-- END CONFIG -->"])
def test_app_readme_without_markers_is_an_error(tmp_path: Path, marker: str) -> None:
    readme = tmp_path / "README.md"
    text = (REPO / "app" / "README.md").read_text()
    readme.write_text(text.replace(marker, "<!-- gone"))
    result = run(APP_DOCS, "--check", "--readme", readme)
    assert result.returncode == 1
    assert "markers" in result.stderr


def test_a_role_without_argument_specs_is_named(tmp_path: Path) -> None:
    repo = copy_roles(tmp_path, "roles/base")
    (repo / "roles/backup/tasks").mkdir(parents=True)
    (repo / "roles/backup/tasks/main.yml").write_text("---\n[]\n")
    result = run(CHECK, "--repo", repo)
    assert result.returncode == 1
    assert "roles/backup: no meta/argument_specs.yml" in result.stderr
