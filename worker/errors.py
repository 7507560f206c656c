"""Exception types of the service, each naming the input at fault.

Client errors are bad input: the job fails at once and is never retried.
Server errors are faults of the machinery around it (storage, broker): worth a retry.
"""


from worker.logs import redact


class CityscapesWorkerError(Exception):
    """Base of every error this service raises on purpose; its message hides secrets (passwords
    in URLs), since it is shown in job states, logs and Flower."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class ClientError(CityscapesWorkerError):
    """The job's input is wrong; retrying cannot help."""


class ManifestError(ClientError):
    """The annotations file is malformed; `problems` lists every finding, one line each."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        shown = "; ".join(problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"{source}: {shown}{more}")

    def __reduce__(self):
        return (type(self), (self.source, self.problems))


class LabelMapError(ClientError):
    """A label map (task labels or label_color.txt) is malformed."""


class ShapeError(ClientError):
    """A shape cannot be drawn or encoded; the message names the image and the shape."""


class ImageSourceError(ClientError):
    """An image file that the job needs is missing or unreadable."""


class StorageNotFound(ClientError):
    """An object or bucket named by the job does not exist."""


class StorageDenied(ClientError):
    """The service's credentials may not read or write an object named by the job."""


class StorageLocationError(ClientError):
    """A storage URL names no possible object (an invalid bucket name, say)."""


class ServerError(CityscapesWorkerError):
    """A fault outside the input (storage, broker); the operation may succeed when retried."""


class NoConsumer(CityscapesWorkerError):
    """No running worker consumes the queue a job would be sent to: it would wait unseen."""


class SourceChanged(CityscapesWorkerError):
    """An object the job had looked at changed or vanished before the job used it (a cached
    run expired mid-job, say); retrying the step cannot help, running the job again can."""


class PoisonChunk(CityscapesWorkerError):
    """A chunk whose worker died every time it ran it; running it again could only repeat that."""


class IncompleteJob(CityscapesWorkerError):
    """A job's parts did not all arrive (a chunk lost); retrying the assembly cannot help."""


class OutputPathError(ClientError):
    """An output path that cannot or must not be written: a folder, a link, a device, an input."""


class OutputTooLarge(ClientError):
    """An output larger than its store can hold as one object; only a smaller job can help."""


class InputStreamError(ClientError):
    """An input read from a pipe or a device that cannot be spooled (too large, a terminal)."""


class PoolProcessDied(CityscapesWorkerError):
    """A pool process of an in-process run died (the OOM killer, a crash) while on an item."""
