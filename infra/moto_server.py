"""The local AWS endpoint: moto's server, with DynamoDB requests serialized and transactions
rolled back from an undo log.

moto's TransactWriteItems deep-copies whole tables to be able to roll back, which races with
any concurrent write to the same table ("dictionary changed size during iteration", HTTP 500).
Real DynamoDB has no such problem, so the local endpoint serializes DynamoDB requests (they are
fast in moto) while SQS long polls and S3 transfers stay concurrent.

Streams: a cancelled transaction leaves no stream record (DynamoDB streams carry committed
changes only), although moto writes its items one by one and the undo log restores them.

The copy is also O(table size) per transaction item (~1 s per two-item transaction at 10,000
items, and memory to match: `make dev` with a few thousand contacts slowed to seconds per
request). So a transaction here keeps an undo log of just the items it names (their state
before it) and restores those when it is cancelled: the same answers, in O(items) time.

Usage: moto_server.py -H 127.0.0.1 -p PORT
"""

import argparse
import os
import threading

from moto.dynamodb import models as ddb
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

_original = ddb.DynamoDBBackend.transact_write_items
_copy = ddb.copy


class _TablesByReference:
    """Stands in for `copy` inside moto.dynamodb.models while a transaction runs: tables are kept
    by reference (the undo log below replaces the copy); everything else is deep-copied as usual."""

    @staticmethod
    def deepcopy(obj, memo=None):
        if isinstance(obj, ddb.Table):
            return obj
        return _copy.deepcopy(obj, memo)


def _key(table, op):
    if "Item" in op:
        key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
        if table.range_key_attr is not None:
            key[table.range_key_attr] = op["Item"][table.range_key_attr]
        return key
    return op.get("Key")


def transact_write_items(self, transact_items):
    undo = []
    for item in transact_items:
        try:
            _, op = next(iter(item.items()))
            table = self.tables.get(op.get("TableName"))
            key = _key(table, op) if table is not None else None
            before = self.get_item(op["TableName"], key) if key is not None else None
        except Exception:
            # Malformed: moto refuses it before writing anything.
            continue
        if key is not None:
            undo.append((op["TableName"], key, before.to_json()["Attributes"] if before else None))
    # DynamoDB Streams carry only committed changes: a cancelled transaction (and its undo
    # below) leaves no stream record, so the stream's length is restored on failure.
    streams = [
        (t.stream_shard, len(t.stream_shard.items))
        for t in {name: self.tables.get(name) for name, _, _ in undo}.values()
        if t is not None and t.stream_shard is not None
    ]
    ddb.copy = _TablesByReference
    try:
        return _original(self, transact_items)
    except Exception:
        for table_name, key, attrs in reversed(undo):
            if attrs is None:
                self.delete_item(table_name, key)
            else:
                self.put_item(table_name, attrs)
        for shard, length in streams:
            del shard.items[length:]
        raise
    finally:
        ddb.copy = _copy



ddb.DynamoDBBackend.transact_write_items = transact_write_items



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
