"""Signs webhook event bodies with the official ECDSA library, as Stark Bank does.

Usage: sign_events.py COUNT PREFIX [WORKSPACE]
Prints JSON: {"public_key": PEM, "events": [{"id", "body", "signature", "signature_high_s"}]}.
Bodies are json.dumps(..., sort_keys=True), the form of Stark Bank's real deliveries; every
signature comes from ellipticcurve.Ecdsa.sign, and its high-S twin is (r, n - s).
"""
import json
import sys

from ellipticcurve.curve import secp256k1
from ellipticcurve.ecdsa import Ecdsa
from ellipticcurve.privateKey import PrivateKey
from ellipticcurve.signature import Signature


def main():
    count, prefix = int(sys.argv[1]), sys.argv[2]
    workspace = sys.argv[3] if len(sys.argv) > 3 else "5078376503050240"
    key = PrivateKey()
    out = []
    for i in range(count):
        event_id = "%s%04d" % (prefix, i)
        event = {"event": {
            "created": "2026-11-29T12:00:%02d.123456+00:00" % (i % 60),
            "id": event_id,
            "log": {
                "created": "2026-11-29T12:00:00.000001+00:00",
                "errors": [],
                "id": "log" + event_id,
                "invoice": {"amount": 1000 + i, "fee": 0, "id": "inv" + event_id, "name": "S\u00e3o Jo\u00e3o",
                            "status": "paid"},
                "type": "credited",
            },
            "subscription": "invoice",
            "workspaceId": workspace,
        }}
        body = json.dumps(event, sort_keys=True)
        sig = Ecdsa.sign(body, key)
        assert Ecdsa.verify(body, sig, key.publicKey())
        low = Signature(sig.r, min(sig.s, secp256k1.N - sig.s))
        high = Signature(sig.r, max(sig.s, secp256k1.N - sig.s))
        out.append({"id": event_id, "body": body, "signature": low.toBase64(), "signature_high_s": high.toBase64()})
    print(json.dumps({"public_key": key.publicKey().toPem(), "events": out}))


if __name__ == "__main__":
    main()
