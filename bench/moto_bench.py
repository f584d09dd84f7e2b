"""The bench's local AWS endpoint: the project's launcher (infra/moto_server.py, DynamoDB requests
serialized) plus one fix that only changes how long moto takes, not what it answers.

moto's TransactWriteItems deep-copies the whole table once per transaction item so it can roll
back: O(table size) per item, ~1 s per two-item transaction at 10,000 items. The bench writes tens
of thousands of items, so here the rollback keeps an undo log of just the items the transaction
names (their state before it) and restores those when the transaction is cancelled.

Usage: moto_bench.py -H 127.0.0.1 -p PORT
"""

import copy
import os
import sys

from moto.dynamodb import models as ddb

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
    ddb.copy = _TablesByReference
    try:
        return _original(self, transact_items)
    except Exception:
        for table_name, key, attrs in reversed(undo):
            if attrs is None:
                self.delete_item(table_name, key)
            else:
                self.put_item(table_name, attrs)
        raise
    finally:
        ddb.copy = _copy


ddb.DynamoDBBackend.transact_write_items = transact_write_items

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "infra"))
import moto_server  # noqa: E402  (the project's launcher)

if __name__ == "__main__":
    moto_server.main()
