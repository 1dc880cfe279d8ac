"""The ``cnnlab`` dispatcher: every command is reachable, errors and broken pipes are quiet."""

import subprocess
import sys

import pytest

from cnnlab.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0 and "usage: cnnlab" in capsys.readouterr().out


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["trian"])
    assert exc.value.code == 2 and "invalid choice: 'trian'" in capsys.readouterr().err


def test_closed_pipe_is_not_a_traceback():
    """`cnnlab analyze ... | head -c1`: the output (~100 kB) overflows the 64 kB pipe buffer, so
    the command meets a closed pipe and must end quietly."""
    child = subprocess.Popen(
        [sys.executable, "-c", "from cnnlab.cli import main; raise SystemExit(main())",
         "analyze", "torchvision:resnet50", "--format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout.read(1) == b"{"
    child.stdout.close()
    err = child.stderr.read().decode()
    assert child.wait(timeout=300) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
