"""The official SDK's verdict on webhook vectors, through starkbank.event.parse.

Usage: event_parse.py PUBLIC_KEY_PEM VECTOR_FILE...
The SDK fetches Stark Bank's public key over HTTP (GET /v2/public-key) and caches it; here the
fetch is replaced by one that serves PUBLIC_KEY_PEM and counts calls, and the cache starts empty.
Prints {"VECTOR_FILE": {"valid": bool, "event_id": str|null, "error": str|null}, "_fetches": n}.
"""

import json
import sys

import starkbank
from starkbank.error import InvalidSignatureError
from starkcore.utils import parse as core_parse
from starkcore.utils.cache import cache

from oracle import PrivateKey

pem = open(sys.argv[1]).read()
fetches = 0


class _Response:
    def json(self):
        return {"publicKeys": [{"content": pem}], "cursor": None}


def fake_get_raw(**kwargs):
    global fetches
    assert kwargs["path"] == "/public-key", kwargs
    fetches += 1
    return _Response()


core_parse.get_raw = fake_get_raw
cache.clear()
# A user is required by the SDK's plumbing, but no request leaves this process.
user = starkbank.Project(environment="sandbox", id="1", private_key=PrivateKey().toPem())

out = {}
for path in sys.argv[2:]:
    vector = json.load(open(path, encoding="utf-8"))
    try:
        event = starkbank.event.parse(content=vector["body"], signature=vector["signature"], user=user)
        out[path] = {"valid": True, "event_id": event.id, "error": None}
    except InvalidSignatureError as error:
        out[path] = {"valid": False, "event_id": None, "error": str(error)}
    except Exception as error:  # noqa: BLE001
        # The signature checked out, but the body is not an event the SDK can build.
        verified = core_parse.verify(content=vector["body"], signature=vector["signature"], sdk_version="",
                                     api_version="v2", host="bank", user=user, language="en-US", timeout=15)
        out[path] = {"valid": verified == vector["body"], "event_id": None,
                     "error": "%s: %s" % (type(error).__name__, error)}
out["_fetches"] = fetches
print(json.dumps(out))
