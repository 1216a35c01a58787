"""The job of `stark-sweep serve-webhook`, written the usual FastAPI way with the official SDK.

POST /webhook: `starkbank.event.parse(content, signature)` verifies the Digital-Signature
(pure-Python ECDSA), then the event's id, subscription, log type and raw body go into SQLite
(WAL, synchronous=FULL) and are committed before the 200. A duplicate answers 200; a bad
signature 401. The SDK would fetch Stark Bank's public key once and cache it; here the cache is
seeded with the key the load generator signs with (BENCH_PUBLIC_KEY, a PEM file), exactly as
the SDK stores it (an ellipticcurve PublicKey under "stark-public-key").

Run: BENCH_DB=events.db BENCH_PUBLIC_KEY=public-key.pem uvicorn webhook_app:app [--workers 2]
"""

import os
import sqlite3
from datetime import datetime, timezone

from ellipticcurve import PublicKey
from fastapi import FastAPI, Request, Response
from starkcore.utils.cache import cache

import starkbank
from starkbank.error import InvalidSignatureError

with open(os.environ["BENCH_PUBLIC_KEY"]) as f:
    cache["stark-public-key"] = PublicKey.fromPem(f.read())

db = sqlite3.connect(os.environ["BENCH_DB"], isolation_level=None, check_same_thread=False)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=FULL")
db.execute("PRAGMA busy_timeout=10000")
db.execute(
    "CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, subscription TEXT NOT NULL, "
    "log_type TEXT NOT NULL, body BLOB NOT NULL, received_at TEXT NOT NULL)"
)

app = FastAPI()


@app.get("/health")
async def health():
    return {"ok": True}


@app.post("/webhook")
async def webhook(request: Request):
    raw = await request.body()
    signature = request.headers.get("Digital-Signature")
    if not signature:
        return Response(status_code=400)
    try:
        event = starkbank.event.parse(content=raw.decode("utf-8"), signature=signature)
    except InvalidSignatureError:
        return Response(status_code=401)
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(
            "INSERT INTO events (id, subscription, log_type, body, received_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING",
            (event.id, event.subscription, event.log.type, raw, datetime.now(timezone.utc).isoformat()),
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return Response(status_code=200)
