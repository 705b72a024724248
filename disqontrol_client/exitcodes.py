"""Exit codes shared by every command (SPEC §2)."""

OK = 0
FAILED = 1
USAGE = 2
UNREACHABLE = 3
