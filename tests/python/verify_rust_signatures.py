"""Verifies signatures made by stark-sweep (Rust) with the official ellipticcurve library.

Input: a JSON file {"items": [{message, message_sha256, signature, public_key_pem, expect_valid}]}.
Output on stdout: {"checked": n, "valid": v, "failures": [...]} (exit 0 even with failures, so the
Rust test can show them; any error reading the input exits non-zero)."""

import hashlib
import json
import sys

from oracle import Ecdsa, PublicKey, Signature

items = json.load(open(sys.argv[1], encoding="utf-8"))["items"]
keys = {}
failures = []
valid = 0
for index, item in enumerate(items):
    message = item["message"]
    # The bytes Python hashes are exactly the bytes Rust signed.
    digest = hashlib.sha256(message.encode("utf-8")).hexdigest()
    if digest != item["message_sha256"]:
        failures.append({"index": index, "why": "message bytes differ from Rust's"})
        continue
    pem = item["public_key_pem"]
    key = keys.get(pem) or keys.setdefault(pem, PublicKey.fromPem(pem))
    try:
        signature = Signature.fromBase64(item["signature"])
    except Exception as error:  # noqa: BLE001
        failures.append({"index": index, "why": "signature does not decode: %s" % error})
        continue
    ok = Ecdsa.verify(message, signature, key)
    valid += ok
    if ok != item["expect_valid"]:
        failures.append({"index": index, "why": "Ecdsa.verify gave %s, expected %s" % (ok, item["expect_valid"])})
json.dump({"checked": len(items), "valid": valid, "failures": failures}, sys.stdout)
