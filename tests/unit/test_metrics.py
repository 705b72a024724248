"""The Prometheus text of `disqontrolctl metrics`, from status replies."""
from __future__ import annotations

from disqontrold.metrics import exposition, samples_of

STATUS = {
    "master": {"uptime": 12.5, "generation": 2},
    "consumers": [
        {"group": "mail", "job": "S-1", "job_age": 2.0, "oldest_job_age": 42.4, "done": 10, "failed": 1, "restarts": 2, "rss_mib": 20.0, "job_pids": [7, 8]},
        {"group": "mail", "job": None, "done": 5, "failed": 0, "restarts": 0, "rss_mib": 10.0, "job_pids": []},
    ],
    "restarting": [{"group": "pics", "restarts": 3}],
    "groups": [{"group": "mail", "target": 2, "done": 115, "failed": 1, "restarts": 2},
               {"group": "pics", "target": 1, "done": 0, "failed": 0, "restarts": 3}],
}
QUEUES = [{"queue": 'we"ird\\q', "ready": 3, "delayed": 1, "in_flight": 2, "failure_queue": "failed-jobs", "failed": 4}]


def test_processes_are_summed_per_group_and_the_counters_are_the_groups_totals():
    text = exposition(samples_of(STATUS, QUEUES))
    assert 'disqontrol_jobs_done_total{group="mail"} 115\n' in text  # retired slots' 100 included
    assert 'disqontrol_jobs_failed_total{group="mail"} 1\n' in text
    assert 'disqontrol_consumer_busy_processes{group="mail"} 1\n' in text
    assert 'disqontrol_consumer_rss_bytes{group="mail"} 31457280\n' in text
    assert 'disqontrol_job_processes{group="mail"} 2\n' in text
    assert 'disqontrol_oldest_job_seconds{group="mail"} 42\n' in text  # what a "stuck job" alert reads
    assert 'disqontrol_oldest_job_seconds{group="pics"} 0\n' in text
    assert 'disqontrol_consumer_restarts_total{group="pics"} 3\n' in text  # waiting for its restart
    assert 'disqontrol_consumer_processes{group="pics"} 0\n' in text  # no process: 0, not no series
    assert 'disqontrol_jobs_done_total{group="pics"} 0\n' in text
    assert 'disqontrol_consumer_target_processes{group="pics"} 1\n' in text
    assert "disqontrol_master_uptime_seconds 12.5\n" in text
    assert "# TYPE disqontrol_jobs_done_total counter\n" in text


def test_label_values_are_escaped():
    text = exposition(samples_of(STATUS, QUEUES))
    assert 'disqontrol_queue_ready_jobs{queue="we\\"ird\\\\q"} 3\n' in text
    assert 'disqontrol_failure_queue_jobs{queue="failed-jobs"} 4\n' in text


def test_without_master_or_broker_only_the_up_gauges_say_so():
    text = exposition(samples_of(None, None))
    assert text == ("# HELP disqontrol_master_up 1 if the master answered on its control socket\n"
                    "# TYPE disqontrol_master_up gauge\ndisqontrol_master_up 0\n"
                    "# HELP disqontrol_broker_up 1 if the broker answered the queue statistics\n"
                    "# TYPE disqontrol_broker_up gauge\ndisqontrol_broker_up 0\n")


def test_queue_outcomes_are_counters_from_zero_and_durations_a_cumulative_histogram():
    status = {**STATUS, "queue_jobs": {"buckets": [0.1, 1.0], "queues": {
        "mail": {"done": 4, "retried": 2, "parked": 1, "durations": [3, 2, 1], "duration_sum": 7.5}}}}
    text = exposition(samples_of(status, QUEUES))
    assert 'disqontrol_queue_jobs_parked_total{queue="mail"} 1\n' in text
    assert 'disqontrol_queue_jobs_parked_total{queue="we\\"ird\\\\q"} 0\n' in text  # known queue, no job yet
    assert "# TYPE disqontrol_queue_job_duration_seconds histogram\n" in text
    assert ('disqontrol_queue_job_duration_seconds_bucket{queue="mail",le="0.1"} 3\n'
            'disqontrol_queue_job_duration_seconds_bucket{queue="mail",le="1.0"} 5\n'
            'disqontrol_queue_job_duration_seconds_bucket{queue="mail",le="+Inf"} 6\n'
            'disqontrol_queue_job_duration_seconds_sum{queue="mail"} 7.5\n'
            'disqontrol_queue_job_duration_seconds_count{queue="mail"} 6\n') in text
    assert 'duration_seconds_count{queue="we' not in text  # no histogram before a first job
