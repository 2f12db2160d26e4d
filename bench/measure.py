"""Run one command and write its wall time, max RSS and CPU time as JSON (a tiny ``time -v``).

    python -S -I bench/measure.py RESULT.json LOG [TIMEOUT_S] -- CMD [ARGS...]

Started as a small, fresh interpreter on purpose: on Linux a child's ``ru_maxrss`` starts at the
resident size of the process it was forked from, so forking the job from the benchmark's own
(large) process would inflate every job's peak. This helper imports only the standard library. With TIMEOUT_S, a command still running after that
many seconds is killed (SIGKILL) and reported with ``"timed_out": true``.
"""

import json
import os
import signal
import sys
import time


def main() -> None:
    result, log, *rest = sys.argv[1:]
    timeout = float(rest.pop(0)) if rest and rest[0] != "--" else None
    sep, *cmd = rest or [""]
    if sep != "--" or not cmd:
        sys.exit("usage: measure.py RESULT.json LOG [TIMEOUT_S] -- CMD [ARGS...]")
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
    timed_out = []
    if timeout:
        def kill(*_):
            timed_out.append(True)
            os.kill(pid, signal.SIGKILL)
        signal.signal(signal.SIGALRM, kill)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    _, status, ru = os.wait4(pid, 0)
    signal.setitimer(signal.ITIMER_REAL, 0)
    wall = time.perf_counter() - t0
    os.close(fd)
    with open(result, "w") as fh:
        json.dump({"wall": wall, "max_rss": ru.ru_maxrss * 1024, "cpu": ru.ru_utime + ru.ru_stime,
                   "rc": os.waitstatus_to_exitcode(status), "timed_out": bool(timed_out)}, fh)


if __name__ == "__main__":
    main()
