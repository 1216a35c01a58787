"""Signatures made by the official library, for stark-sweep to verify.

Usage: sdk_signatures.py OUT COUNT
Writes {"items": [...]} to OUT. Each item: public_key_pem, message (what is presented), signature,
high_s, expect_valid, kind, signed (the text that was signed). Kinds:
- request: `project/ID:TIME:BODY` signed with Ecdsa.sign;
- webhook: an event body in Python's sorted form, signed as is (verifies over the raw bytes);
- webhook-compact: the same event sent compact and unsorted, signed in the sorted form (the SDK's
  event.parse accepts it through its re-serialization fallback);
- tampered: a signed message with one character changed (must fail).
Half of the valid signatures are turned high-S. Before writing, every item is checked here with
the official library, so a verdict Rust disagrees with is the official one."""

import json
import sys

from starkbank import key as sdk_key
from starkcore.utils.parse import _is_signature_valid

from oracle import Ecdsa, PrivateKey, PublicKey, bodies, fail, high_s, is_high, webhook_body

out_path, count = sys.argv[1], int(sys.argv[2])
pairs = []
for _ in range(4):
    private_pem, public_pem = sdk_key.create()
    pairs.append((PrivateKey.fromPem(private_pem), public_pem, PublicKey.fromPem(public_pem)))

items = []
texts = bodies(count)
for i in range(count):
    private, public_pem, public = pairs[i % len(pairs)]
    kind = ["request", "request", "webhook", "webhook-compact"][i % 4]
    if kind == "request":
        signed = "project/%d:%s:%s" % (4690000000000000 + i, "17949%05d.%06d" % (i, i * 7919 % 1000000), texts[i])
        presented = signed
    else:
        event = webhook_body(i)
        signed = json.dumps(event, sort_keys=True)
        presented = signed if kind == "webhook" else json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    signature = Ecdsa.sign(signed, private)
    if is_high(signature):
        fail("ellipticcurve 2.3 is expected to sign low-S")
    make_high = i % 2 == 1
    if make_high:
        signature = high_s(signature)
        assert is_high(signature)
    # The official library accepts it (including high-S), through the SDK's own check.
    if not _is_signature_valid(content=presented, signature=signature, public_key=public):
        fail("the SDK refuses its own signature %d (%s, high_s=%s)" % (i, kind, make_high))
    items.append({"public_key_pem": public_pem, "message": presented, "signed": signed,
                  "signature": signature.toBase64(), "high_s": make_high, "expect_valid": True, "kind": kind})
    if i % 5 == 0:
        # A tampered twin: one character changed in the middle of what was signed.
        middle = len(presented) // 2
        replacement = "X" if presented[middle:middle + 1] != "X" else "Y"
        tampered = presented[:middle] + replacement + presented[middle + 1:] if presented else "x"
        if _is_signature_valid(content=tampered, signature=signature, public_key=public):
            fail("the SDK accepts a tampered message %d" % i)
        if Ecdsa.verify(tampered, signature, public):
            fail("Ecdsa.verify accepts a tampered message %d" % i)
        items.append({"public_key_pem": public_pem, "message": tampered, "signed": signed,
                      "signature": signature.toBase64(), "high_s": make_high, "expect_valid": False,
                      "kind": "tampered"})

json.dump({"items": items}, open(out_path, "w", encoding="utf-8"), ensure_ascii=False)
print(json.dumps({"items": len(items), "high_s": sum(i["high_s"] and i["expect_valid"] for i in items),
                  "tampered": sum(not i["expect_valid"] for i in items)}))
