"""disqontrol_client: the thin package application code imports to add jobs.

Importing it never imports the daemon (``disqontrold``), psutil,
setproctitle, python-daemon or croniter.
"""
from disqontrol_client.job import Job

__all__ = ["Job", "Producer"]


def __getattr__(name: str):  # lazy: keeps ``import disqontrol_client`` cheap
    if name == "Producer":
        from disqontrol_client.producer import Producer

        return Producer
    raise AttributeError(name)
