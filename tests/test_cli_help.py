"""Every command's --help prints and exits 0: help strings go through argparse's
%-formatting, where a bare "95%" once broke `recdistill --help` (found in issue 18's session)."""

from __future__ import annotations

import pytest

from recdistill.cli import main

COMMANDS = [[], ["synth"], ["run"], ["sweep"], ["report"], ["compare"], ["score"], ["export"], ["data"],
            ["data", "inspect"], ["config"], ["config", "show"], ["config", "keys"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "recdistill")
def test_help_prints(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    assert "usage: recdistill" in capsys.readouterr().out
