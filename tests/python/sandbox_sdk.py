"""The official Stark Bank Python SDK (starkbank 2.36.0) against the stark-sweep emulator.

Only the host is swapped. starkcore builds `https://sandbox.api.starkbank.com/v2/...` inline in
`starkcore.utils.request.fetch` (the environment-to-host mapping is a dict literal inside that
function), so no SDK function can be patched to change it without copying SDK code. Instead we
patch the transport: `requests.Session.request` rewrites that one prefix to the emulator's URL.
Everything the SDK does (paths, query encoding, JSON bodies, signing, status handling, the
public-key fetch of `event.parse`) runs unchanged.

Usage: sandbox_sdk.py, with SANDBOX_URL, SANDBOX_PROJECT_ID and SANDBOX_PRIVATE_KEY_PATH set.
Exits 0 when every check passes; prints one line per check.
"""

import json
import os
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import starkbank
from emulator_host import point_sdk_at
from starkbank.error import InputErrors

URL = os.environ["SANDBOX_URL"].rstrip("/")
point_sdk_at(URL)

with open(os.environ["SANDBOX_PRIVATE_KEY_PATH"]) as f:
    PRIVATE_KEY = f.read()
starkbank.user = starkbank.Project(environment="sandbox", id=os.environ["SANDBOX_PROJECT_ID"], private_key=PRIVATE_KEY)


# ---- a webhook receiver --------------------------------------------------------------------------

RECEIVED = []  # (path, body text, Digital-Signature)


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode("utf-8")
        RECEIVED.append((self.path, body, self.headers.get("Digital-Signature")))
        self.send_response(500 if self.path == "/fail" else 200)
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=server.serve_forever, daemon=True).start()
HOOK_URL = "http://127.0.0.1:{}".format(server.server_address[1])


def control(path, payload):
    req = urllib.request.Request(URL + path, data=json.dumps(payload).encode(), method="POST")
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 200, resp.status
        return json.loads(resp.read())


def control_get(path):
    with urllib.request.urlopen(URL + path) as resp:
        assert resp.status == 200, resp.status
        return json.loads(resp.read())


def wait_for(what, cond, seconds=30):
    deadline = time.time() + seconds
    while not cond():
        if time.time() > deadline:
            raise AssertionError("gave up waiting for " + what)
        time.sleep(0.02)


def codes(error):
    return [e.code for e in error.errors]


CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


# ---- checks --------------------------------------------------------------------------------------

@check
def webhook_create_list_get():
    global HOOK, FAILING_HOOK
    HOOK = starkbank.webhook.create(url=HOOK_URL + "/ok", subscriptions=["invoice", "transfer"])
    FAILING_HOOK = starkbank.webhook.create(url=HOOK_URL + "/fail", subscriptions=["invoice"])
    assert len(HOOK.id) == 16 and HOOK.subscriptions == ["invoice", "transfer"], HOOK
    listed = {w.id for w in starkbank.webhook.query()}
    assert listed == {HOOK.id, FAILING_HOOK.id}, listed
    page, cursor = starkbank.webhook.page(limit=1)
    assert len(page) == 1 and cursor
    page2, cursor2 = starkbank.webhook.page(limit=1, cursor=cursor)
    assert len(page2) == 1 and cursor2 is None and page2[0].id != page[0].id
    assert starkbank.webhook.get(HOOK.id).url == HOOK_URL + "/ok"


@check
def invoice_create_query_page_get_update_cancel_logs():
    global INVOICES
    due = datetime.now(timezone.utc) + timedelta(days=3)
    invoices = starkbank.invoice.create([
        starkbank.Invoice(
            amount=4100 + i, name="Iara Souza", tax_id="337.451.076-08", due=due, expiration=timedelta(days=5),
            fine=2.5, interest=1.3, tags=["SDK", "batch-{}".format(i)],
            discounts=[{"percentage": 5, "due": due - timedelta(days=1)}],
            descriptions=[{"key": "Campaign", "value": "sdk"}],
        )
        for i in range(3)
    ])
    INVOICES = invoices
    assert len(invoices) == 3
    for inv in invoices:
        assert len(inv.id) == 16 and inv.status == "created" and inv.fee == 0, inv
        assert inv.tags == ["sdk", "batch-{}".format(invoices.index(inv))], inv.tags
        assert inv.tax_id == "337.451.076-08" and inv.nominal_amount == inv.amount
        assert isinstance(inv.created, datetime) and isinstance(inv.due, datetime)
        assert inv.fine == 2.5 and inv.discounts[0]["percentage"] == 5
    ids = [i.id for i in invoices]
    queried = list(starkbank.invoice.query(tags=["sdk"], status="created"))
    assert [i.id for i in queried] == ids[::-1], "newest first"
    assert [i.id for i in starkbank.invoice.query(ids=ids[:2])] == ids[:2][::-1]
    assert len(list(starkbank.invoice.query(limit=2))) == 2
    today = datetime.now(timezone.utc).date()
    assert len(list(starkbank.invoice.query(after=today - timedelta(days=1), before=today + timedelta(days=1)))) == 3
    page, cursor = starkbank.invoice.page(limit=2, tags=["sdk"])
    rest, end = starkbank.invoice.page(limit=2, tags=["sdk"], cursor=cursor)
    assert len(page) == 2 and cursor and len(rest) == 1 and end is None
    got = starkbank.invoice.get(ids[0])
    assert got.id == ids[0] and got.amount == 4100
    updated = starkbank.invoice.update(ids[0], amount=5000, due=due + timedelta(days=1), expiration=timedelta(days=3))
    assert updated.amount == 5000 and updated.nominal_amount == 5000 and updated.expiration == timedelta(days=3)
    canceled = starkbank.invoice.update(ids[1], status="canceled")
    assert canceled.status == "canceled"
    logs = list(starkbank.invoice.log.query(invoice_ids=[ids[1]]))
    assert [l.type for l in logs] == ["canceled", "created"], [l.type for l in logs]
    assert logs[0].invoice.status == "canceled" and logs[1].invoice.status == "created"
    created_logs = list(starkbank.invoice.log.query(types=["created"], invoice_ids=ids))
    assert len(created_logs) == 3
    page, cursor = starkbank.invoice.log.page(limit=1, invoice_ids=ids)
    assert len(page) == 1 and cursor
    one = starkbank.invoice.log.get(logs[0].id)
    assert one.id == logs[0].id and one.invoice.id == ids[1]


@check
def invoice_errors():
    try:
        starkbank.invoice.get("0")
        raise AssertionError("unknown invoice accepted")
    except InputErrors as e:
        assert codes(e) == ["invalidInvoice"], codes(e)
    try:
        starkbank.invoice.create([starkbank.Invoice(amount=100, name="X", tax_id="337.451.076-08")] * 105)
        raise AssertionError("105 invoices accepted")
    except InputErrors as e:
        assert codes(e) == ["invalidJson"], codes(e)
    try:
        starkbank.invoice.create([starkbank.Invoice(amount=100, name="X", tax_id="000.000.000-00")])
        raise AssertionError("bad tax id accepted")
    except InputErrors as e:
        assert codes(e) == ["invalidTaxId"], codes(e)


@check
def event_parse_of_a_delivered_webhook():
    paid = INVOICES[2]
    control("/_sandbox/invoices/{}/pay".format(paid.id), {"credit_delay_seconds": 0})
    def credited_body():
        for path, body, sig in RECEIVED:
            if path == "/ok" and '"credited"' in body and paid.id in body:
                return body, sig
    wait_for("the credited webhook", credited_body)
    body, sig = credited_body()
    event = starkbank.event.parse(content=body, signature=sig)
    assert event.subscription == "invoice" and event.log.type == "credited", event
    assert event.log.invoice.id == paid.id and event.log.invoice.status == "paid"
    # 5% off before the discount date: 4102 - 205.
    assert event.log.invoice.fee > 0 and event.log.invoice.discount_amount == 205
    assert event.log.invoice.amount == paid.nominal_amount - 205
    assert "isDelivered" not in json.loads(body)["event"]
    try:
        starkbank.event.parse(content=body.replace("credited", "paid"), signature=sig)
        raise AssertionError("tampered body accepted")
    except starkbank.error.InvalidSignatureError:
        pass


@check
def event_query_page_get_update_delete():
    wait_for("deliveries to settle", lambda: len(list(starkbank.event.query(is_delivered=True))) >= 1)
    events = list(starkbank.event.query())
    assert len(events) >= 6, len(events)
    for e in events:
        assert isinstance(e.created, datetime) and e.workspace_id, e
    page, cursor = starkbank.event.page(limit=2)
    assert len(page) == 2 and cursor
    page2, _ = starkbank.event.page(limit=2, cursor=cursor)
    assert not {e.id for e in page} & {e.id for e in page2}
    event = starkbank.event.get(events[0].id)
    assert event.id == events[0].id and event.log.invoice.id
    updated = starkbank.event.update(event.id, is_delivered=False)
    assert updated.is_delivered is False
    undelivered = [e.id for e in starkbank.event.query(is_delivered=False)]
    assert event.id in undelivered
    assert starkbank.event.update(event.id, is_delivered=True).is_delivered is True
    deleted = starkbank.event.delete(event.id)
    assert deleted.id == event.id
    try:
        starkbank.event.get(event.id)
        raise AssertionError("deleted event still served")
    except InputErrors as e:
        assert codes(e) == ["invalidEvent"], codes(e)


@check
def event_attempts_of_a_failing_webhook():
    wait_for("an attempt", lambda: len(list(starkbank.event.attempt.query(webhook_ids=[FAILING_HOOK.id]))) > 0)
    attempts = list(starkbank.event.attempt.query(webhook_ids=[FAILING_HOOK.id]))
    a = attempts[0]
    assert a.code == "badHttpStatus" and a.webhook_id == FAILING_HOOK.id and a.event_id, a
    assert starkbank.event.attempt.get(a.id).id == a.id
    page, _ = starkbank.event.attempt.page(limit=1, event_ids=[a.event_id])
    assert len(page) == 1


@check
def transfer_create_query_page_get_logs():
    transfers = starkbank.transfer.create([
        starkbank.Transfer(
            amount=100 + i, name="Stark Bank S.A.", tax_id="20.018.183/0001-80", bank_code="20018183",
            branch_code="0001", account_number="6341320293482496", account_type="payment",
            external_id="sdk-transfer-{}".format(i), tags=["SDK-Sweep"],
        )
        for i in range(2)
    ])
    assert [t.status for t in transfers] == ["created", "created"]
    assert transfers[0].external_id == "sdk-transfer-0" and transfers[0].tags == ["sdk-sweep"]
    ids = [t.id for t in transfers]
    assert [t.id for t in starkbank.transfer.query(tags=["sdk-sweep"])] == ids[::-1]
    assert [t.id for t in starkbank.transfer.query(ids=[ids[0]])] == [ids[0]]
    page, cursor = starkbank.transfer.page(limit=1, tags=["sdk-sweep"])
    assert len(page) == 1 and cursor
    wait_for("success", lambda: all(starkbank.transfer.get(i).status == "success" for i in ids))
    assert len(list(starkbank.transfer.query(status="success"))) == 2
    logs = list(starkbank.transfer.log.query(transfer_ids=[ids[0]]))
    assert [l.type for l in logs] == ["success", "processing", "created"], [l.type for l in logs]
    assert starkbank.transfer.log.get(logs[0].id).transfer.id == ids[0]
    page, _ = starkbank.transfer.log.page(limit=1, types=["created"])
    assert len(page) == 1
    try:
        starkbank.transfer.create([starkbank.Transfer(
            amount=0, name="X", tax_id="20.018.183/0001-80", bank_code="20018183", branch_code="0001",
            account_number="1", account_type="payment")])
        raise AssertionError("zero transfer accepted")
    except InputErrors as e:
        assert codes(e) == ["invalidAmount"], codes(e)
    try:
        starkbank.transfer.get("0")
        raise AssertionError("unknown transfer accepted")
    except InputErrors as e:
        assert codes(e) == ["invalidTransfer"], codes(e)


@check
def transfer_webhook_event_parses():
    def transfer_body():
        for path, body, sig in RECEIVED:
            if path == "/ok" and '"subscription": "transfer"' in body and '"success"' in body:
                return body, sig
    wait_for("a transfer webhook", transfer_body)
    body, sig = transfer_body()
    event = starkbank.event.parse(content=body, signature=sig)
    assert event.subscription == "transfer" and event.log.transfer.status == "success", event


@check
def transfer_scheduled_tomorrow_is_deleted():
    # "Tomorrow" on the emulator's simulated clock, which runs ahead of the real one.
    now = datetime.fromisoformat(control_get("/_sandbox/clock")["now"])
    tomorrow = (now + timedelta(days=1)).date()
    transfer, = starkbank.transfer.create([starkbank.Transfer(
        amount=150, name="Stark Bank S.A.", tax_id="20.018.183/0001-80", bank_code="20018183",
        branch_code="0001", account_number="6341320293482496", account_type="payment",
        external_id="sdk-scheduled-0", scheduled=tomorrow, tags=["SDK-Scheduled"],
    )])
    assert transfer.status == "created", transfer
    # A date-only scheduled comes back as 11:00 UTC of that day.
    assert transfer.scheduled == datetime(tomorrow.year, tomorrow.month, tomorrow.day, 11), transfer.scheduled
    assert starkbank.transfer.get(transfer.id).status == "created"
    deleted = starkbank.transfer.delete(transfer.id)
    assert deleted.id == transfer.id and deleted.status == "canceled", deleted
    assert starkbank.transfer.get(transfer.id).status == "canceled"
    assert [t.id for t in starkbank.transfer.query(tags=["sdk-scheduled"])] == [transfer.id], "still listed"
    assert transfer.id in [t.id for t in starkbank.transfer.query(status="canceled")]
    try:
        starkbank.transfer.delete(transfer.id)
        raise AssertionError("a canceled transfer was canceled again")
    except InputErrors as e:
        assert codes(e) == ["invalidOperation"], codes(e)
    logs = list(starkbank.transfer.log.query(transfer_ids=[transfer.id]))
    assert [l.type for l in logs] == ["canceled", "created"], [l.type for l in logs]

    def canceled_body():
        for path, body, sig in RECEIVED:
            if path == "/ok" and '"canceled"' in body and transfer.id in body:
                return body, sig
    wait_for("the canceled transfer webhook", canceled_body)
    body, sig = canceled_body()
    event = starkbank.event.parse(content=body, signature=sig)
    assert event.log.type == "canceled" and event.log.transfer.status == "canceled", event


@check
def webhook_delete():
    deleted = starkbank.webhook.delete(FAILING_HOOK.id)
    assert deleted.id == FAILING_HOOK.id
    assert [w.id for w in starkbank.webhook.query()] == [HOOK.id]
    try:
        starkbank.webhook.get(FAILING_HOOK.id)
        raise AssertionError("deleted webhook still served")
    except InputErrors as e:
        assert codes(e) == ["invalidWebhookId"], codes(e)


@check
def wrong_key_is_refused():
    stranger = starkbank.Project(
        environment="sandbox", id=os.environ["SANDBOX_PROJECT_ID"], private_key=starkbank.key.create()[0])
    try:
        list(starkbank.invoice.query(user=stranger))
        raise AssertionError("a request signed with the wrong key was accepted")
    except InputErrors as e:
        assert codes(e) == ["invalidCredentials"], codes(e)


for fn in CHECKS:
    fn()
    print("ok", fn.__name__, flush=True)
server.shutdown()
