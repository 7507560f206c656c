"""The corpora of broken and hostile inputs, as cluster jobs this time: each job ends with the
same clear one-line error (or the documented warning) as the command line gives, leaves nothing
at its output or in staging, and no worker dies of it."""

from __future__ import annotations

from tests.integration.conftest import BUCKET, wait_until
from tests.integration.test_export_cluster import keys
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


def test_every_hostile_input_fails_its_job_cleanly(s3, workers):
    from worker import client
    from worker.celery import app

    jobs = {}
    for kind, cases in corpus().items():
        for number, (case, (data, code, text)) in enumerate(cases.items()):
            source = f"hostile/{kind}-{number:03d}"
            body = data.encode() if isinstance(data, str) else data
            s3.put_object(Bucket=BUCKET, Key=source, Body=body)
            output = f"hostile/out/{kind}-{number:03d}"
            spec = ({"annotations": f"s3://{BUCKET}/{source}", "output": f"s3://{BUCKET}/{output}.zip"}
                    if kind == "export" else
                    {"archive": f"s3://{BUCKET}/{source}", "output": f"s3://{BUCKET}/{output}.json"})
            submit = client.submit_export if kind == "export" else client.submit_import
            jobs[submit(spec)] = (f"{kind}: {case}", code, text, output)

    for job_id, (case, code, text, output) in jobs.items():
        final = client.wait(job_id, timeout=120)
        if code:
            assert final["state"] == "FAILURE", (case, final)
            error = final["error"]
            assert text in error and "\n" not in error and "Traceback" not in error, (case, error)
            assert keys(s3, output) == [], case
        else:
            assert final["state"] == "SUCCESS", (case, final)
            if text is not None:
                assert any(text in w for w in final["result"]["warnings"]), (case, final["result"])
    # A chunk's failure is recorded at once; the chord's errback cleans up just after.
    wait_until(lambda: keys(s3, ".cityscapes-staging/") == [], 10, "staging removed")
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    # Both workers lived through it.
    assert len(app.control.ping(timeout=1)) >= 2
