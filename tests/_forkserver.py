"""Test helper: import the `mmsearch` CLI once (torch, open_clip: seconds), then fork one real process per run.

Used by the crash tests, which kill `mmsearch index` many times: each child is a separate process
running the real entry point (:func:`mmsearch.cli.main`) with its own argv, stdout and stderr; only
the slow imports are shared. The server itself runs no model code before forking, so no thread pool
exists yet when it forks.

Protocol (JSON lines). stdin: ``{"argv": [...], "stdout": PATH, "stderr": PATH}``.
stdout: ``{"pid": N}`` as soon as the child runs, then ``{"pid": N, "returncode": RC}`` when it has
ended (``-9`` for SIGKILL, as :mod:`subprocess` reports it).
"""

from __future__ import annotations

import json
import os
import sys

import faiss  # noqa: F401  - the slow imports, done once
import open_clip  # noqa: F401
import PIL.Image  # noqa: F401

import mmsearch.ann.faiss_index  # noqa: F401
import mmsearch.cli
import mmsearch.encoders.clip  # noqa: F401
import mmsearch.engine  # noqa: F401
import mmsearch.ingest.decode  # noqa: F401


def _child(req: dict) -> None:
    code = 1
    try:
        for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        sys.argv = ["mmsearch", *req["argv"]]
        try:
            mmsearch.cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 - report like an interpreter would, then exit 1
            import traceback

            traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            _child(req)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(json.dumps({"pid": pid, "returncode": rc}), flush=True)


if __name__ == "__main__":
    main()
