"""An S3-compatible server for the fleet tests: moto's, one request at a time.

moto (the Python registry's `moto[server]`) honours `If-Match` and `If-None-Match: *` on
PutObject, but checks them and writes in separate steps while other requests run on other
threads, so two racing conditional writes could both succeed. Real S3 makes the check and
the write one atomic step. Serving one request at a time gives moto that property, which is
what the concurrent-upload test relies on (../shared/notes/operations.md, B7).

    python s3_server.py PORT     # serves on 127.0.0.1:PORT until killed
"""

import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server


class OneAtATime:
    """A WSGI app that runs (and reads out) each request under one lock."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            body = self.app(environ, start_response)
            try:
                return [b"".join(body)]
            finally:
                if hasattr(body, "close"):
                    body.close()


def main():
    port = int(sys.argv[1])
    app = OneAtATime(DomainDispatcherApplication(create_backend_app))
    # threaded: connections are kept alive and served concurrently; requests still run one
    # at a time under the lock.
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
    print(f"s3 on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
