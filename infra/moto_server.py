"""The local AWS endpoint: moto's server, with DynamoDB requests serialized, transactions
rolled back from an undo log, and queries answered in O(page) instead of O(table).

moto's TransactWriteItems deep-copies whole tables to be able to roll back, which races with
any concurrent write to the same table ("dictionary changed size during iteration", HTTP 500).
Real DynamoDB has no such problem, so the local endpoint serializes DynamoDB requests (they are
fast in moto) while SQS long polls and S3 transfers stay concurrent.

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


# --- Queries in O(page), not O(table) ---------------------------------------------------------
#
# moto answers a Query by testing every item of the table (a global secondary index) or of the
# table (a base-table partition), then sorting every match with its slow typed comparisons: at
# 100,000 messages a contact's history or a contact listing took seconds. The launcher keeps,
# per table, a map from each GSI hash-key value to the keys of the items carrying it, built on
# the table's first index query and maintained by every write path (Table.put_item and
# Table.delete_item — which PutItem, DeleteItem, BatchWriteItem, transactions and the undo log
# above all go through — and UpdateItem, which changes an item in place). A query then orders
# the candidates by plain Python values and hands moto a window of them in that order — the
# page plus one, doubled until moto either fills its page (it says so with a LastEvaluatedKey)
# or has seen every candidate — so moto still applies every condition, filter, projection, start
# key, limit and size cap itself, on a prefix of the same order it would have used.

import bisect
from decimal import Decimal

from moto.dynamodb.models import table as ddb_table

_gsi_maps = {}


def _native(value):
    """A DynamoType as a plain value ordered as DynamoDB orders keys (S: code points, which is
    UTF-8 byte order; N: numerically; B: bytes); None sorts first."""
    if value is None:
        return (0, "")
    if value.type == "N":
        return (1, Decimal(value.value))
    return (2, value.value)


class _GsiMap:
    """Per table: for each global index (one hash and one range attribute), its items grouped by
    hash-key value, each group sorted by the index's order, kept sorted on every write."""

    def __init__(self, table):
        self.table = table
        self.indexes = {}  # index name -> (hash attribute, sort attributes)
        for index in table.global_indexes:
            hashes = [k["AttributeName"] for k in index.schema if k["KeyType"] == "HASH"]
            ranges = [k["AttributeName"] for k in index.schema if k["KeyType"] == "RANGE"]
            if len(hashes) == 1 and len(ranges) == 1:
                self.indexes[index.name] = (hashes[0], [ranges[0], table.hash_key_attr, table.range_key_attr])
        self.groups = {}  # (index name, DynamoType of the hash key) -> ([sort key], [item])
        self.placed = {}  # (table hash, table range) -> [(group, sort key)]
        for item in table.all_items():
            self.add(item)

    def placements(self, item):
        out = []
        for name, (hash_attr, sort_attrs) in self.indexes.items():
            # Items without both index keys are not in the index.
            if hash_attr in item.attrs and sort_attrs[0] in item.attrs:
                sort_key = tuple(_native(item.attrs.get(a)) for a in sort_attrs)
                out.append(((name, item.attrs[hash_attr]), sort_key))
        return out

    def add(self, item):
        placements = self.placements(item)
        if placements:
            self.placed[(item.hash_key, item.range_key)] = placements
        for group, sort_key in placements:
            keys, items = self.groups.setdefault(group, ([], []))
            at = bisect.bisect_left(keys, sort_key)
            keys.insert(at, sort_key)
            items.insert(at, item)

    def remove(self, key):
        for group, sort_key in self.placed.pop(key, ()):
            keys, items = self.groups[group]
            at = bisect.bisect_left(keys, sort_key)
            while at < len(keys) and keys[at] == sort_key:
                if (items[at].hash_key, items[at].range_key) == key:
                    del keys[at], items[at]
                    break
                at += 1
            if not keys:
                del self.groups[group]


def _gsi_map(table):
    gsi = _gsi_maps.get(id(table))
    if gsi is None or gsi.table is not table:
        gsi = _GsiMap(table)
        _gsi_maps[id(table)] = gsi
    return gsi


def _reindex(table, hash_key, range_key):
    gsi = _gsi_maps.get(id(table))
    if gsi is None or gsi.table is not table:
        return
    key = (hash_key, range_key)
    item = None if (table.has_range_key and range_key is None) else table.get_item(hash_key, range_key)
    if item is not None and gsi.placed.get(key, []) == gsi.placements(item) and all(
        gsi.groups[g][1][bisect.bisect_left(gsi.groups[g][0], k)] is item for g, k in gsi.placed.get(key, [])
    ):
        return  # An update that moved no index key (the common case): nothing to re-sort.
    gsi.remove(key)
    if item is not None:
        gsi.add(item)


_table_put = ddb_table.Table.put_item
_table_delete = ddb_table.Table.delete_item
_table_query = ddb_table.Table.query
_backend_update = ddb.DynamoDBBackend.update_item


def _put_item(self, item_attrs, *args, **kwargs):
    item = _table_put(self, item_attrs, *args, **kwargs)
    _reindex(self, item.hash_key, item.range_key)
    return item


def _delete_item(self, hash_key, range_key):
    try:
        return _table_delete(self, hash_key, range_key)
    finally:
        _reindex(self, hash_key, range_key)


def _update_item(self, table_name, key, *args, **kwargs):
    try:
        return _backend_update(self, table_name, key, *args, **kwargs)
    finally:
        table = self.tables.get(table_name)
        if table is not None and isinstance(key, dict) and table.hash_key_attr in key:
            hash_key = ddb.DynamoType(key[table.hash_key_attr])
            range_attr = table.range_key_attr
            range_key = ddb.DynamoType(key[range_attr]) if range_attr and range_attr in key else None
            _reindex(table, hash_key, range_key)


def _ordered_candidates(table, hash_key, index_name, hash_key_conditions):
    """The items a query may return in moto's (ascending) order, with their sort keys and the
    attributes those keys are made of; None to let moto look for itself."""
    if not index_name:
        if hash_key is None or not table.has_range_key:
            return None
        partition = table.items.get(hash_key) or {}
        ranges = sorted(partition, key=_native)
        return [partition[r] for r in ranges], [(_native(r),) for r in ranges], [table.range_key_attr]
    gsi = _gsi_map(table)
    if index_name not in gsi.indexes:
        return None
    hash_attr, sort_attrs = gsi.indexes[index_name]
    value = dict(hash_key_conditions or []).get(hash_attr, hash_key)
    keys, items = gsi.groups.get((index_name, value), ([], []))
    return items, keys, sort_attrs


def _query(self, hash_key, range_comparison, range_objs, limit, exclusive_start_key, scan_index_forward,
           projection_expressions, index_name=None, consistent_read=False, filter_expression=None,
           hash_key_conditions=None, **kwargs):
    def run():
        return _table_query(self, hash_key, range_comparison, range_objs, limit, exclusive_start_key,
                            scan_index_forward, projection_expressions, index_name, consistent_read,
                            filter_expression, hash_key_conditions=hash_key_conditions, **kwargs)

    found = _ordered_candidates(self, hash_key, index_name, hash_key_conditions)
    if found is None:
        return run()
    items, keys, sort_attrs = found
    forward = scan_index_forward is not False
    lo, hi = 0, len(items)
    if exclusive_start_key and all(a in exclusive_start_key for a in sort_attrs):
        # Skip what earlier pages returned (moto skips the start key again itself).
        start = tuple(_native(ddb.DynamoType(exclusive_start_key[a])) for a in sort_attrs)
        if forward:
            lo = max(bisect.bisect_left(keys, start) - 1, 0)
        else:
            hi = min(bisect.bisect_right(keys, start) + 1, len(items))
    remaining = hi - lo
    window = (limit + 1) if limit else remaining
    while True:
        part = items[lo:lo + window] if forward else items[max(hi - window, lo):hi]
        self.all_items = lambda: part
        try:
            results = run()
        finally:
            del self.all_items
        if results[2] is not None or window >= remaining:
            return results
        window *= 2


ddb_table.Table.put_item = _put_item
ddb_table.Table.delete_item = _delete_item
ddb_table.Table.query = _query
ddb.DynamoDBBackend.update_item = _update_item


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
