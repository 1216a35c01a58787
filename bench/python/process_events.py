"""The transfer step with the official SDK: every credited invoice of ours becomes one transfer
of amount - fee, and the pulled events are marked delivered, the same three API steps as
`stark-sweep process-events` (list undelivered events, create transfers 100 per request, mark
each event delivered). It keeps no local state: no durable claims, no recovery after a crash,
so it does less work than stark-sweep; a deterministic externalId keeps a re-run from paying
twice. Prints one JSON line: counts, requests by kind and the time of each phase.
Env: STARKBANK_PROJECT_ID, STARKBANK_PRIVATE_KEY_PATH, STARKBANK_API_URL.
"""

import json
import time

import sdk_host

import starkbank

TARGET = dict(
    name="Stark Bank S.A.", tax_id="20.018.183/0001-80", bank_code="20018183", branch_code="0001",
    account_number="6341320293482496", account_type="payment",
)


def main():
    sdk_host.use_project()
    phases = {}
    t = time.perf_counter()
    events = list(starkbank.event.query(is_delivered=False))
    phases["list_events_s"] = time.perf_counter() - t

    t = time.perf_counter()
    credits = {}
    for e in events:
        if e.subscription == "invoice" and e.log.type == "credited" and "stark-sweep" in e.log.invoice.tags:
            inv = e.log.invoice
            if inv.amount - inv.fee > 0:
                credits[inv.id] = inv.amount - inv.fee
    transfers = [
        starkbank.Transfer(amount=net, external_id="sdk-sweep-{}-1".format(inv), tags=["sdk-sweep", "invoice-" + inv],
                           **TARGET)
        for inv, net in credits.items()
    ]
    created = 0
    for i in range(0, len(transfers), 100):
        created += len(starkbank.transfer.create(transfers[i:i + 100]))
    phases["create_transfers_s"] = time.perf_counter() - t

    t = time.perf_counter()
    for e in events:
        starkbank.event.update(e.id, is_delivered=True)
    phases["mark_delivered_s"] = time.perf_counter() - t

    print(json.dumps({
        "events_pulled": len(events), "credits": len(credits), "transfers_created": created,
        "marked_delivered": len(events), "phases": {k: round(v, 3) for k, v in phases.items()},
        "requests": sdk_host.stats(),
    }))


main()
