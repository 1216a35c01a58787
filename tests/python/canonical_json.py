"""Python's own `json.dumps(json.loads(text), sort_keys=True)`, the form the SDK re-verifies a
webhook body in, over random JSON texts (awkward floats, big integers, escapes, lone
surrogates, duplicate keys, odd whitespace) and some texts Python refuses.

Usage: canonical_json.py COUNT SEED
Prints [{"text": ..., "canonical": str | null}] (null where json.loads raises)."""

import json
import random
import struct
import sys

count, seed = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)


def number():
    pick = rng.randrange(9)
    if pick == 0:
        return str(rng.randrange(-10**30, 10**30))
    if pick == 1:
        # Any finite double, written with repr.
        while True:
            f = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
            if f == f and f not in (float("inf"), float("-inf")):
                return repr(f)
    if pick == 2:
        return rng.choice(["0.1", "1e16", "1E+16", "1e-7", "-0.0", "-0", "0e0", "123.4560", "1.5e300", "5e-324",
                           "1e400", "-1e400", "-28082684949261.312", "28082684949261.3125", "NaN", "Infinity", "-Infinity", "100000000000000000000.0"])
    if pick == 3:
        return "%d.%de%d" % (rng.randrange(100), rng.randrange(1000), rng.randrange(-30, 30))
    return str(rng.randrange(-1000, 100000))


def string():
    parts = []
    for _ in range(rng.randrange(8)):
        pick = rng.randrange(7)
        if pick == 0:
            parts.append("\\u%04x" % rng.randrange(0x10000))  # includes lone surrogates
        elif pick == 1:
            parts.append(rng.choice(['\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"]))
        elif pick == 2:
            parts.append(chr(rng.choice([rng.randrange(0x80, 0x800), rng.randrange(0x800, 0xd800),
                                         rng.randrange(0xe000, 0x110000)])))
        elif pick == 3:
            parts.append(rng.choice(["ção", "💸", "\u2028", "\x7f", "日本"]))
        else:
            parts.append("".join(rng.choice("abcXYZ09 -_.:") for _ in range(rng.randrange(6))))
    return '"' + "".join(parts) + '"'


def ws():
    return rng.choice(["", "", " ", "\n", "\t", "\r\n  "])


def value(depth):
    pick = rng.randrange(10 if depth < 4 else 6)
    if pick < 2:
        return number()
    if pick < 4:
        return string()
    if pick == 4:
        return rng.choice(["true", "false", "null"])
    if pick == 5:
        return number()
    if pick < 8:
        keys = [string() for _ in range(rng.randrange(5))]
        if keys and rng.randrange(4) == 0:
            keys.append(keys[0])  # a duplicate key: the later value wins
        items = [ws() + k + ws() + ":" + ws() + value(depth + 1) + ws() for k in keys]
        return "{" + ",".join(items) + ws() + "}"
    return "[" + ",".join(ws() + value(depth + 1) + ws() for _ in range(rng.randrange(5))) + "]"


def broken(text):
    if not text:
        return "{"
    cut = rng.randrange(len(text))
    return rng.choice([text[:cut], text[:cut] + "," + text[cut:], text + " x", "\x01" + text,
                       text.replace('"', '"\x01', 1), "[1,]", '{"a":1,}', "01", "1.", ".5", "+1", "'a'"])


out = []
for i in range(count):
    text = ws() + value(0) + ws()
    if i % 10 == 9:
        text = broken(text)
    try:
        canonical = json.dumps(json.loads(text), sort_keys=True)
    except (ValueError, RecursionError):
        canonical = None
    out.append({"text": text, "canonical": canonical})
json.dump(out, sys.stdout)
