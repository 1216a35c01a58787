"""Shared helpers for the conformance scripts: the official libraries, imported once, and
varied message bodies. Run only through the tests (see tests/it/conformance.rs)."""

import json
import sys

import starkbank  # noqa: F401  (the pinned official SDK; import fails loudly if absent)
from ellipticcurve import Ecdsa, PrivateKey, PublicKey, Signature
from ellipticcurve.curve import secp256k1

N = secp256k1.N


def high_s(signature):
    """The same signature with s -> n - s, as Stark Bank's older library produced."""
    s = signature.s if signature.s > N // 2 else N - signature.s
    return Signature(r=signature.r, s=s)


def is_high(signature):
    return signature.s > N // 2


def bodies(count):
    """`count` varied request/webhook bodies: empty, ASCII, non-ASCII, emoji, escaped JSON, big."""
    fixed = [
        "",
        "{}",
        '{"invoices": [{"amount": 100, "name": "Jo\\u00e3o", "taxId": "012.345.678-90"}]}',
        json.dumps({"name": "São Paulo ção ü ñ"}, ensure_ascii=False),
        json.dumps({"emoji": "💸🏦✅ 👩🏽‍💻"}, ensure_ascii=False),
        json.dumps({"emoji": "💸🏦✅"}),
        json.dumps({"quoted": "she said \"hi\"\\n\\t", "path": "C:\\\\x", "ctl": "\u0001\u001f"}),
        json.dumps({"nested": json.dumps({"inner": json.dumps({"deep": "\"x\""})})}),
        "not json at all: : : ::",
        " \t\r\n ",
        "a" * 100_000,
        json.dumps({"transfers": [{"amount": i, "name": "Nome %d ação" % i, "tags": ["t%d" % i]} for i in range(100)]},
                   ensure_ascii=False),
        "日本語のテキスト、中文文本، النص العربي, עברית",
        "\u2028\u2029 line separators",
    ]
    out = []
    i = 0
    while len(out) < count:
        base = fixed[i % len(fixed)]
        # Same shapes, different content, so no two messages are alike.
        out.append(base if i < len(fixed) else base + json.dumps({"n": i, "s": "ñ%d💰" % i}, ensure_ascii=(i % 2 == 0)))
        i += 1
    return out


def webhook_body(i):
    """An event body in the form Stark Bank sends (Python's sorted dumps)."""
    event = {
        "event": {
            "created": "2026-11-29T12:00:%02d.123456+00:00" % (i % 60),
            "id": str(5000000000000000 + i),
            "log": {
                "created": "2026-11-29T12:00:00.000001+00:00",
                "errors": [],
                "id": str(6000000000000000 + i),
                "invoice": {
                    "amount": 1000 + i,
                    "fee": 0,
                    "id": str(7000000000000000 + i),
                    "name": ["João da Silva", "Zoë 💸", "Ana \"A\" Souza", "Ōtsuka\\x"][i % 4],
                    "tags": ["stark-sweep", "slot-%d" % (i % 8)],
                    "fine": 2.0,
                    "interest": 1.0,
                },
                "type": ["created", "paid", "credited"][i % 3],
            },
            "subscription": "invoice",
            "workspaceId": "5078376503050240",
        }
    }
    return event


def fail(message):
    sys.stderr.write(message + "\n")
    sys.exit(1)


__all__ = ["Ecdsa", "PrivateKey", "PublicKey", "Signature", "N", "high_s", "is_high", "bodies", "webhook_body", "fail"]
