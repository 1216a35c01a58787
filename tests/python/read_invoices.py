"""Reads back, with the official SDK, the invoices stark-sweep issued on the emulator.

Usage: read_invoices.py, with SANDBOX_URL, SANDBOX_PROJECT_ID and SANDBOX_PRIVATE_KEY_PATH set.
Prints a JSON list of {id, name, taxId, amount, status, tags} for every invoice tagged
`stark-sweep`, as the SDK parsed them (its own types, its own date parsing).
"""

import json
import os

import starkbank
from emulator_host import point_sdk_at

point_sdk_at(os.environ["SANDBOX_URL"])
with open(os.environ["SANDBOX_PRIVATE_KEY_PATH"]) as f:
    starkbank.user = starkbank.Project(
        environment="sandbox", id=os.environ["SANDBOX_PROJECT_ID"], private_key=f.read()
    )

out = []
for invoice in starkbank.invoice.query(tags=["stark-sweep"]):
    assert isinstance(invoice.amount, int), invoice.amount
    assert invoice.created is not None and invoice.due is not None
    out.append({
        "id": invoice.id,
        "name": invoice.name,
        "taxId": invoice.tax_id,
        "amount": invoice.amount,
        "status": invoice.status,
        "tags": invoice.tags,
    })
print(json.dumps(out))
