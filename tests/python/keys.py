"""Keys through the official SDK.

  keys.py sdk-keys OUTDIR COUNT
      Creates COUNT key pairs with starkbank.key.create(), at least one of them with a secret
      that is only 31 bytes long (the library does not left-pad it; ~1 key in 256), and writes
      OUTDIR/sdk-<i>.pem. Prints {"keys": [{file, public_pem, secret_bytes}]}.
  keys.py derive FILE...
      For each private-key PEM file, the public key PEM the official library derives from it,
      or the error it raises. Prints {"FILE": {"public_pem": ...} | {"error": ...}}.
  keys.py project-sign PRIVATE_PEM_FILE PUBLIC_PEM_FILE PROJECT_ID BODIES_JSON
      Loads the key as starkbank.Project(environment="sandbox", ...) and signs each body through
      the SDK's request-authentication code (the headers every API call carries). Also checks
      that the public key file is the one the SDK derives. Prints {"derived_matches": bool,
      "requests": [{access_id, access_time, signature, body}]}.
"""

import base64
import json
import os
import sys

import starkbank
from starkbank import key as sdk_key
from starkcore.utils.request import _authentication_headers

from oracle import PrivateKey, PublicKey, fail


def secret_bytes(private_pem):
    """The length of the secret's OCTET STRING in the DER (SEQUENCE, INTEGER 1, OCTET STRING)."""
    body = "".join(line for line in private_pem.strip().splitlines() if not line.startswith("-----"))
    der = base64.b64decode(body)
    assert der[0] == 0x30 and der[1] < 0x80 and der[2:5] == b"\x02\x01\x01" and der[5] == 0x04, der[:8].hex()
    return der[6]


def sdk_keys(out_dir, count):
    made, short, tries = [], None, 0
    while len(made) < count - 1 or short is None:
        tries += 1
        if tries > 20000:
            fail("no 31-byte secret after 20000 keys")
        private_pem, public_pem = sdk_key.create()
        size = secret_bytes(private_pem)
        if size < 32 and short is None:
            short = (private_pem, public_pem, size)
        elif len(made) < count - 1:
            made.append((private_pem, public_pem, size))
    made.append(short)
    listing = []
    for index, (private_pem, public_pem, size) in enumerate(made):
        if not private_pem.startswith("\n-----BEGIN EC PRIVATE KEY-----"):
            fail("the SDK's PEM was expected to start with a newline")
        path = os.path.join(out_dir, "sdk-%d.pem" % index)
        with open(path, "w") as f:
            f.write(private_pem)
        listing.append({"file": path, "public_pem": public_pem, "secret_bytes": size})
    print(json.dumps({"keys": listing, "tries": tries}))


def derive(files):
    out = {}
    for path in files:
        try:
            out[path] = {"public_pem": PrivateKey.fromPem(open(path).read()).publicKey().toPem()}
        except Exception as error:  # noqa: BLE001
            out[path] = {"error": str(error)}
    print(json.dumps(out))


def project_sign(private_file, public_file, project_id, bodies_file):
    project = starkbank.Project(environment="sandbox", id=project_id, private_key=open(private_file).read())
    derived = project.private_key().publicKey().toPem()
    given = PublicKey.fromPem(open(public_file).read()).toPem()
    requests = []
    for body in json.load(open(bodies_file, encoding="utf-8")):
        headers = _authentication_headers(user=project, body=body)
        requests.append({"access_id": headers["Access-Id"], "access_time": headers["Access-Time"],
                         "signature": headers["Access-Signature"], "body": body})
    print(json.dumps({"derived_matches": derived == given, "requests": requests}))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "sdk-keys":
        sdk_keys(args[0], int(args[1]))
    elif command == "derive":
        derive(args)
    elif command == "project-sign":
        project_sign(*args)
    else:
        fail("unknown command %s" % command)
