"""The corpora of broken and hostile inputs, as cluster jobs this time: each job ends with the
same clear one-line error (or the documented warning) as the command line gives, leaves nothing
at its output or in staging, and no worker dies of it."""

from __future__ import annotations

import pytest

from tests.integration.conftest import BROKERS
from tests.worker.test_hostile_export_input import ACCEPTED, REFUSED
from tests.worker.test_hostile_import import CASES as IMPORT_MEMBER_CASES
from tests.worker.test_hostile_import import OPEN_CASES
from tests.worker.test_hostile_inputs import EXPORT_CASES, IMPORT_CASES


def corpus() -> dict[str, dict[str, tuple[bytes | str, int, str | None]]]:
    """kind -> case -> (input, exit code of the CLI, text its one line holds; None: no line)."""
    export = {**EXPORT_CASES, **{f"refused: {k}": (d, 2, m) for k, (d, m) in REFUSED.items()},
              **{f"accepted: {k}": (d, 0, None) for k, d in ACCEPTED.items()}}
    imports = {**IMPORT_CASES, **IMPORT_MEMBER_CASES, **OPEN_CASES}
    return {"export": export, "import": imports}


@pytest.mark.parametrize("cluster", BROKERS, indirect=True)
def test_every_hostile_input_fails_its_job_cleanly(cluster):
    from worker import client
    from worker.celery import app

    jobs = {}
    for kind, cases in corpus().items():
        for number, (case, (data, code, text)) in enumerate(cases.items()):
            source = f"hostile/{kind}-{number:03d}"
            body = data.encode() if isinstance(data, str) else data
            cluster.put(source, body)
            output = f"hostile/out/{kind}-{number:03d}"
            spec = ({"annotations": cluster.url(source), "output": cluster.url(f"{output}.zip")}
                    if kind == "export" else
                    {"archive": cluster.url(source), "output": cluster.url(f"{output}.json")})
            submit = client.submit_export if kind == "export" else client.submit_import
            jobs[submit(spec)] = (f"{kind}: {case}", code, text, output)

    for job_id, (case, code, text, output) in jobs.items():
        final = client.wait(job_id, timeout=120)
        if code:
            assert final["state"] == "FAILURE", (case, final)
            error = final["error"]
            assert text in error and "\n" not in error and "Traceback" not in error, (case, error)
            assert cluster.keys(output) == [], case
        else:
            assert final["state"] == "SUCCESS", (case, final)
            if text is not None:
                assert any(text in w for w in final["result"]["warnings"]), (case, final["result"])
    for job_id in jobs:
        cluster.wait_cleaned(job_id)
    assert cluster.open_uploads() == []
    # Both workers lived through it, never restarted.
    assert all(proc.poll() is None for proc in cluster.procs.values())
    assert len(app.control.ping(timeout=1)) == 2
