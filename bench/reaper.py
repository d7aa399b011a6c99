"""Spawn one contender, reap it with ``os.wait4`` and report its wall time and peak RSS.

The runner starts ``python -I -S reaper.py ARGV...`` with a file open on descriptor 3 and reads
``<wall ns> <ru_maxrss KiB> <exit code>`` from it afterwards. On Linux a child's ``ru_maxrss``
includes the peak RSS of the process that spawned it (exec records the old address space's
high-water mark), so the spawner must be small: this one imports nothing but ``os``, ``sys`` and
``time``, which keeps the floor under every reading at the size of a bare interpreter.
"""

import os
import sys
import time

RESULT_FD = 3


def main() -> None:
    os.set_inheritable(RESULT_FD, False)
    argv = sys.argv[1:]
    start = time.perf_counter_ns()
    pid = os.posix_spawn(argv[0], argv, os.environ)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter_ns() - start
    os.write(RESULT_FD, f"{wall} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}\n".encode())


if __name__ == "__main__":
    main()
