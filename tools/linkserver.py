"""A directory served over HTTP on 127.0.0.1 behind an emulated network link of fixed bandwidth.

    python tools/linkserver.py DIR --rate 100M --port-file PORTFILE
    # GET http://127.0.0.1:PORT/NAME.ckpt.pack arrives at 100 MB/s at most, all downloads together

The policy benchmark's model registry: on one machine the registry is a local directory, so a
"download" would run at page-cache speed and a server holding the checkpoint on its own disk
would gain nothing over one fetching it. A real registry sits across a network (an object store
or a model hub behind a 1-25 Gbit/s link); this server puts such a link in front of the
directory. Every response body goes through one shared Link: concurrent downloads share the
rate, as they share a NIC. HEAD, directory listings (fsspec's http `find`) and errors are
SimpleHTTPRequestHandler's. Ctrl-C or SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import http.server
import os
import signal
import sys
import threading
import time

CHUNK = 256 << 10  # bytes sent per pacing step: small enough that flows interleave


class Link:
    """A shared link of rate bytes/s: send(n) returns once n more bytes may have crossed it."""

    def __init__(self, rate: float):
        if not rate > 0:
            raise ValueError(f"rate must be more than 0 bytes/s, got {rate}")
        self.rate = rate
        self._lock = threading.Lock()
        self._free_at = 0.0  # monotonic time at which the link is idle again

    def send(self, n: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._free_at = max(now, self._free_at) + n / self.rate
            until = self._free_at
        delay = until - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def handler_for(directory: str, link: Link) -> type[http.server.SimpleHTTPRequestHandler]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=directory, **kwargs)

        def copyfile(self, source, outputfile) -> None:
            while True:
                data = source.read(CHUNK)
                if not data:
                    return
                link.send(len(data))
                outputfile.write(data)

        def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
            pass  # one line per request would be the benchmark's noise

    return Handler


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)  # not a reader that hung up early


def _size(text: str) -> float:
    units = {"K": 1e3, "M": 1e6, "G": 1e9}
    text = text.strip().upper().removesuffix("B")
    return float(text[:-1]) * units[text[-1]] if text[-1:] in units else float(text)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory")
    parser.add_argument("--rate", type=_size, required=True,
                        help="the link's bandwidth in bytes/s (suffixes K, M, G: powers of 10)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", help="write the port here once listening")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.directory):
        parser.error(f"{args.directory}: not a directory")
    server = _Server(("127.0.0.1", args.port),
                     handler_for(os.path.abspath(args.directory), Link(args.rate)))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(server.server_address[1]))
        os.replace(tmp, args.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
