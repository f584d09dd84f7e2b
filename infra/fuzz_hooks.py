"""Schemathesis hooks for infra/fuzz-api.sh (loaded through SCHEMATHESIS_HOOKS)."""

import os

import schemathesis

# The id of the API key the fuzzer authenticates with (set by infra/fuzz-api.sh).
_OWN_KEY_ID = os.environ.get("FUZZ_OWN_KEY_ID", "")
# A well-formed id no key has: revoking it is a plain 404.
_UNKNOWN_KEY_ID = "0" * 26


@schemathesis.hook
def before_call(context, case, kwargs):
    """Never revoke the key the run authenticates with.

    Stateful testing feeds ids from responses (`GET /v1/tenant`'s `key_id`, `GET /v1/apikeys`'s
    items) into `DELETE /v1/apikeys/{key_id}`; revoking the run's own key would turn every later
    request into a 401 and leave the rest of the run testing nothing.
    """
    params = case.path_parameters
    if (
        _OWN_KEY_ID
        and case.method.upper() == "DELETE"
        and case.operation.path == "/v1/apikeys/{key_id}"
        and params
        and params.get("key_id") == _OWN_KEY_ID
    ):
        params["key_id"] = _UNKNOWN_KEY_ID
