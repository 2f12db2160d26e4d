"""Run one command and write its wall time, max RSS and CPU time as JSON (a tiny ``time -v``).

    python -S -I bench/measure.py RESULT.json LOG -- CMD [ARGS...]

Started as a small, fresh interpreter on purpose: on Linux a child's ``ru_maxrss`` starts at the
resident size of the process it was forked from, so forking the job from the benchmark's own
(large) process would inflate every job's peak. This helper imports only the standard library.
"""

import json
import os
import sys
import time


def main() -> None:
    result, log, sep, *cmd = sys.argv[1:]
    if sep != "--" or not cmd:
        sys.exit("usage: measure.py RESULT.json LOG -- CMD [ARGS...]")
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    os.close(fd)
    with open(result, "w") as fh:
        json.dump({"wall": wall, "max_rss": ru.ru_maxrss * 1024, "cpu": ru.ru_utime + ru.ru_stime,
                   "rc": os.waitstatus_to_exitcode(status)}, fh)


if __name__ == "__main__":
    main()
