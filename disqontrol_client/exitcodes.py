"""Exit codes shared by every command (SPEC §2)."""

OK = 0
FAILED = 1
USAGE = 2
UNREACHABLE = 3

#: The epilog of every command's --help: the codes scripts and units test for.
HELP = ("exit codes: 0 ok, 1 the job or command failed (or was refused), 2 usage or config error, "
        "3 the broker or the master cannot be reached")
