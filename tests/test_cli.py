import subprocess
import sys

from cppo.cli import COMMANDS, main


def test_unknown_command_is_rejected(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_every_subcommand_has_help():
    for name in COMMANDS:
        r = subprocess.run([sys.executable, "-m", "cppo.cli", name, "--help"], capture_output=True, text=True)
        assert r.returncode == 0, (name, r.stderr[-2000:])
        assert "usage: cppo " + name in r.stdout
