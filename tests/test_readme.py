"""The README's quickstart is what CI runs, word for word."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quickstart", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_quickstart():
    """Two commands: set-up ending in the main job, set-up ending in the tests; CI runs
    both lines as they are."""
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = _quickstart_commands()
    assert len(commands) == 2
    main_job, tests = commands
    assert main_job.endswith("&& arrayrl train ppo")
    assert tests.endswith("&& pytest")
    assert main_job in ci_lines
    assert tests in ci_lines


def test_readme_examples_run():
    import re

    import pytest

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 2
    for block in blocks:
        if "import torch" in block:
            pytest.importorskip("torch")
        namespace: dict = {}
        exec(block, namespace)  # the README's own example, as a user would paste it
        assert "advantage" in namespace or "losses" in namespace
