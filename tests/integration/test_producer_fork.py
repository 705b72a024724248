"""A Producer made (and used) before a fork, as a web app preloaded by
gunicorn (`--preload`) has it, keeps working in the forked children, each
on a connection of its own: every child's ids name its own jobs."""
from __future__ import annotations

import json
import subprocess
import sys

CHILDREN = 3
JOBS_PER_CHILD = 40
RUN_TIMEOUT = 120  # s: a loaded machine

# Adds one job in the parent, forks, and each child adds (one by one and in
# a batch) and reads back what each id it got names.
PRELOADED_APP = '''
import json, os, sys
from disqontrol_client import Job, Producer
from disqontrol_client.job import decode_payload

def say(line):  # one write: the children's lines never interleave
    os.write(1, (json.dumps(line) + "\\n").encode())

producer = Producer(sys.argv[1])
producer.add(Job("parent", "q"))
children = []
for k in range({children}):
    pid = os.fork()
    if pid == 0:
        try:
            ids = [producer.add(Job(f"{{k}}-{{i}}", "q")) for i in range({jobs} // 2)]
            ids += producer.add_many([Job(f"{{k}}-{{i}}", "q") for i in range({jobs} // 2, {jobs})])
            bodies = [decode_payload(producer.broker.show(job_id)["payload"])[0] for job_id in ids]
            ok = bodies == [f"{{k}}-{{i}}" for i in range({jobs})]
            say({{"child": k, "ok": ok, "ids": len(set(ids))}})
            os._exit(0 if ok else 1)
        except BaseException as exc:
            say({{"child": k, "error": repr(exc)}})
            os._exit(1)
    children.append(pid)
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
producer.add(Job("parent again", "q"))
say({{"codes": codes, "length": producer.broker.length("q")}})
'''.format(children=CHILDREN, jobs=JOBS_PER_CHILD)


def test_a_producer_used_before_a_fork_works_in_every_child(broker_url):
    # Given an app that adds a job at import, then forks its workers
    done = subprocess.run([sys.executable, "-c", PRELOADED_APP, broker_url],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)
    # When each child adds jobs through the parent's producer
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    # Then each got its own jobs' ids, and every job is there
    assert done.returncode == 0, (done.stdout, done.stderr)
    children = [line for line in lines if "child" in line]
    assert sorted(c["child"] for c in children) == list(range(CHILDREN)), lines
    assert all(c.get("ok") and c["ids"] == JOBS_PER_CHILD for c in children), lines
    assert lines[-1] == {"codes": [0] * CHILDREN, "length": 2 + CHILDREN * JOBS_PER_CHILD}
