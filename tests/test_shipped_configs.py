"""Every shipped experiment config loads, and its first line says how to run it
(``recdistill run``, ``recdistill sweep`` or the job script it belongs to)."""

from pathlib import Path

import pytest

from recdistill.config import load_config

CONFIGS = sorted((Path(__file__).parent.parent / "jobs" / "configs").glob("*.yaml"))


def test_there_are_configs() -> None:
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_documents_its_command(path: Path) -> None:
    load_config(path)
    first = path.read_text().splitlines()[0]
    assert first.startswith(("# recdistill run ", "# recdistill sweep ", "# python jobs/")) and path.name in first
