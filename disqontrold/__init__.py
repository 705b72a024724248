"""disqontrold: the daemon (pre-fork master, consumers, workers, scheduler)."""
