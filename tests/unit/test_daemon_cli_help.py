"""disqontrold's argument parser: help sized like argparse's own, without
the ``shutil`` import argparse would make (it maps zlib, bz2 and lzma into
the master and so into every consumer an isolated job is forked from)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

TIMEOUT = 60.0
PARSE_ONLY = "import sys; from disqontrold.cli import build_parser; build_parser().parse_args([]); print('shutil' in sys.modules)"
# Our help, then argparse's default formatter's, for the same parser.
BOTH_HELPS = """
import argparse
from disqontrold.cli import build_parser
parser = build_parser()
ours = parser.format_help()
parser.formatter_class = argparse.HelpFormatter
print(ours == parser.format_help(), len(max(ours.splitlines(), key=len)))
"""


def run(code: str, **env: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT,
                          check=True, env={**os.environ, **env})
    return done.stdout.strip()


def test_building_and_parsing_does_not_import_shutil() -> None:
    assert run(PARSE_ONLY) == "False"


@pytest.mark.parametrize("columns", [50, 200])
def test_help_is_what_argparse_prints_for_the_same_columns(columns: int) -> None:
    same, widest = run(BOTH_HELPS, COLUMNS=str(columns)).split()
    assert same == "True"
    assert (int(widest) > 100) == (columns > 100)  # the width did follow $COLUMNS


BIN = os.path.dirname(sys.executable)


@pytest.mark.parametrize("command", [["disqontrold"], ["disqontrold", "scheduler"], ["disqontrolctl"], ["disqontrol"]],
                         ids=" ".join)
def test_every_help_lists_the_exit_codes(command: list[str]) -> None:
    # An operator writing a script or a unit reads the codes where they look first
    done = subprocess.run([os.path.join(BIN, command[0]), *command[1:], "--help"], capture_output=True, text=True,
                          timeout=TIMEOUT, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "exit codes: 0 ok, 1 " in done.stdout and ", 3 the broker or the master cannot be reached" in done.stdout
