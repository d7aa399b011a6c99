"""Produce the volumes of one tape in N worker processes, then assemble them and compare.

A volume needs only the tape's index file and read access to the source folder: no state is
shared between workers, no coordinator hands out bytes. Here the workers are processes on one
machine; on several machines each would get the same index file and see the source over a
network file system, and each would upload its own parts of one S3 multipart upload (see
``s3_multipart.py``).

    python examples/parallel_volumes.py FOLDER [--index INDEX] [--size 64MiB] [--workers 4]
                                               [--out DIR]

Without ``--index`` the folder is recorded first, into ``OUT/tape.db``. Each worker writes its
volumes to ``OUT/<volume name>``; the parent then concatenates them into ``OUT/<tape>.tar`` and
checks that the result is byte-identical to the full stream played in one piece.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import sys

import anyio
import anyio.to_thread

import atartape


def assign(count: int, workers: int) -> list[list[int]]:
    """Disjoint sets of volume indexes, one per worker (round robin: even loads)."""
    return [list(range(worker, count, workers)) for worker in range(workers)]


async def produce(
    index_path: str, source: str, size: str, indexes: list[int], out: str
) -> list[tuple[int, str, str | None]]:
    """Write volumes ``indexes`` to ``out``; return ``(index, name, md5)`` for each."""
    tape = await atartape.Tape.open(index_path, source_root=source)
    player = atartape.TapePlayer(tape)
    done: list[tuple[int, str, str | None]] = []
    for index in indexes:
        volume = player.volume(index, size)
        path = os.path.join(out, volume.name)
        async with await anyio.open_file(path + ".partial", "wb") as handle:
            async for chunk in volume:
                await handle.write(chunk)
        await anyio.to_thread.run_sync(os.replace, path + ".partial", path)
        done.append((index, volume.name, volume.md5))
    return done


def worker(
    number: int, index_path: str, source: str, size: str, indexes: list[int], out: str
) -> None:
    """The body of worker process ``number``: its own event loop, its own volumes.

    It reports through a small manifest file, as a worker on another machine would.
    """
    done = anyio.run(produce, index_path, source, size, indexes, out)
    manifest = {"pid": os.getpid(), "volumes": done}
    with open(os.path.join(out, f"worker-{number}.json"), "w") as handle:
        json.dump(manifest, handle)


async def prepare(folder: str, index: str | None, out: str) -> atartape.Tape:
    if index is not None:
        return await atartape.Tape.open(index, source_root=folder)
    return await atartape.record(folder, index_path=os.path.join(out, "tape.db"), overwrite=True)


async def full_digest(tape: atartape.Tape, source: str) -> str:
    digest = hashlib.sha256()
    async for chunk in atartape.TapePlayer(tape, source_root=source).chunks():
        digest.update(chunk)
    return digest.hexdigest()


def assemble(names: list[str], out: str, target: str) -> tuple[int, str, dict[str, str]]:
    """Concatenate the parts in order; return the size, SHA-256 and MD5 of every part."""
    digest = hashlib.sha256()
    md5s: dict[str, str] = {}
    total = 0
    with open(target, "wb") as whole:
        for name in names:
            with open(os.path.join(out, name), "rb") as part:
                data = part.read()
            md5s[name] = hashlib.md5(data).hexdigest()
            digest.update(data)
            whole.write(data)
            total += len(data)
    return total, digest.hexdigest(), md5s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--index", help="the tape's index (default: record FOLDER first)")
    parser.add_argument("--size", default="64MiB", help="volume size, e.g. 5MiB or 100MB")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--out", default="volumes")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    source = os.path.abspath(args.folder)

    tape = anyio.run(prepare, source, args.index, args.out)
    count = tape.volume_count(args.size)
    plan = assign(count, max(1, min(args.workers, count)))
    print(
        f"{tape.name}: {tape.total_size} bytes, {count} volumes of {args.size}, {len(plan)} workers"
    )

    # One process per worker, started with spawn (not fork): each starts clean, as it would
    # on another machine, and shares nothing with the others but the index file and the source.
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=worker, args=(number, tape.index_path, source, args.size, indexes, args.out)
        )
        for number, indexes in enumerate(plan)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [p.exitcode for p in processes if p.exitcode != 0]
    if failed:
        print(f"{len(failed)} workers failed (exit codes {failed})")
        return 1
    results: dict[int, tuple[str, str | None]] = {}
    for number in range(len(plan)):
        with open(os.path.join(args.out, f"worker-{number}.json")) as handle:
            manifest = json.load(handle)
        indexes = [index for index, _, _ in manifest["volumes"]]
        print(f"worker {manifest['pid']} produced volumes {indexes}")
        for index, name, md5 in manifest["volumes"]:
            results[index] = (name, md5)

    assert sorted(results) == list(range(count)), "every volume exactly once"
    names = [results[index][0] for index in range(count)]
    target = os.path.join(args.out, f"{tape.name}.tar")
    total, assembled, md5s = assemble(names, args.out, target)
    bad_parts = [name for name, md5 in results.values() if md5s[name] != md5]
    expected = anyio.run(full_digest, tape, source)
    if bad_parts or total != tape.total_size or assembled != expected:
        print(f"MISMATCH: {total} bytes, sha256 {assembled}, expected {expected}; {bad_parts}")
        return 1
    print(f"assembled {total} bytes from {count} volumes: identical to the full stream")
    return 0


def self_test() -> int:
    """Three workers, a small tree of a few MiB, volumes of 512 KiB: exit 0 when identical."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        folder = os.path.join(scratch, "dataset")
        for number in range(12):
            os.makedirs(os.path.join(folder, f"d{number % 3}"), exist_ok=True)
            with open(os.path.join(folder, f"d{number % 3}", f"f{number}.bin"), "wb") as handle:
                handle.write(os.urandom(250_000 + number))
        out = os.path.join(scratch, "out")
        return main([folder, "--size", "512KiB", "--workers", "3", "--out", out])


if __name__ == "__main__":
    sys.exit(self_test() if sys.argv[1:] == ["--self-test"] else main())
