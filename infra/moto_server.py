"""The local AWS endpoint: moto's server, with DynamoDB requests serialized.

moto's TransactWriteItems deep-copies whole tables to be able to roll back, which races with
any concurrent write to the same table ("dictionary changed size during iteration", HTTP 500).
Real DynamoDB has no such problem, so the local endpoint serializes DynamoDB requests (they are
fast in moto) while SQS long polls and S3 transfers stay concurrent.

Usage: moto_server.py -H 127.0.0.1 -p PORT
"""

import argparse
import os
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=4566)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))

    app = DomainDispatcherApplication(create_backend_app)
    dynamodb = threading.Lock()

    def serialized(environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB"):
            with dynamodb:
                # Consume the response inside the lock: the work may be lazy.
                return list(app(environ, start_response))
        return app(environ, start_response)

    run_simple(args.host, args.port, serialized, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
