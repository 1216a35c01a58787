"""Turns the JSON results `bench/run` collected in one directory into bench/REPORT.md (stdout).

Usage: report.py RESULTS_DIR. Every figure comes from the files; the sentences that interpret
them are computed from the same figures, so a re-run rewrites them consistently.
"""

import json
import os
import sys

OUT = sys.argv[1]


def load(name):
    path = os.path.join(OUT, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


facts = {}
with open(os.path.join(OUT, "facts.env")) as f:
    for line in f:
        if "=" in line:
            k, v = line.rstrip("\n").split("=", 1)
            facts[k] = v

issue = load("issue.json")
proc = load("process.json")
hooks = {k: load("hook-{}.json".format(k)) for k in ("rust-low", "rust-high", "rust-scraped", "python-1", "python-2")}


def mib(kib):
    return "{:.1f} MiB".format(kib / 1024) if kib is not None else "n/a"


def ms(s):
    return "{:.0f} ms".format(s * 1e3)


def secs(s):
    return "{:.2f} s".format(s)


def n(x):
    return "{:,}".format(x)


def req(kinds, key):
    return kinds.get(key, 0)


lines = []
w = lines.append

w("# stark-sweep benchmarks")
w("")
w("Written by `bench/run` (do not edit by hand; re-run it). Benchmarks, not tests: nothing asserts a time, "
  "and every figure moves with the machine's load.")
w("")
w("| Machine | |")
w("|---|---|")
w("| Date (UTC) | {} |".format(facts.get("date")))
w("| CPUs (`nproc`) | {} ({}) |".format(facts.get("nproc"), facts.get("cpu")))
w("| Load average at start / end | {} / {} |".format(facts.get("load_start"), facts.get("load_end")))
w("| Kernel | {} |".format(facts.get("kernel")))
w("| Rust | {} (release profile) |".format(facts.get("rustc")))
w("| Python | {} (venv from `bench/python/requirements.txt`) |".format(facts.get("python")))
w("| Commit | {} |".format(facts.get("commit")))
w("")
w("The emulator is stark-sweep's own (`stark_sweep::sandbox`), in-process in the Rust harnesses, on loopback; "
  "both sides talk to it the same way (the SDK with only its host swapped). Real Stark Bank adds network "
  "round trips of tens of milliseconds per request, so request counts matter more there than here.")
w("")

# ---- summary ------------------------------------------------------------------------------------
w("## Side by side")
w("")
w("| Benchmark | stark-sweep (Rust, release) | FastAPI + official SDK (Python) |")
w("|---|---|---|")
if issue:
    r, p = issue["rust"], issue.get("python")
    w("| issue-invoices, one slot (8-12 invoices), median wall of {} fresh process runs | {} (min {}, max {}) | {} (min {}, max {}) |".format(
        len(r["runs"]), ms(r["median_wall_s"]), ms(r["min_wall_s"]), ms(r["max_wall_s"]),
        ms(p["median_wall_s"]) if p else "n/a", ms(p["min_wall_s"]) if p else "", ms(p["max_wall_s"]) if p else ""))
    w("| issue-invoices, peak RSS (median) | {} | {} |".format(
        mib(r["median_max_rss_kib"]), mib(p["median_max_rss_kib"]) if p else "n/a"))
if proc:
    r, p = proc["rust"], proc.get("python")
    rk = r["requests"]
    pk = p["requests"] if p else {}
    w("| process-events: credits swept | {} | {} |".format(n(r["credits"]), n(p["credits"]) if p else "n/a"))
    w("| process-events: wall time, one run (Rust: through the recording proxy) | {} | {} |".format(
        secs(r["measured"]["wall_s"]), secs(p["measured"]["wall_s"]) if p else "n/a"))
    d = proc.get("direct")
    if d:
        w("| process-events: wall time, straight to the emulator, {} credits | {} (peak RSS {}) | |".format(
            n(d["credits"]), secs(d["measured"]["wall_s"]), mib(d["measured"]["max_rss_kib"])))
    w("| process-events: transfer POSTs | {} | {} |".format(req(rk, "POST /v2/transfer"), req(pk, "POST /v2/transfer")))
    w("| process-events: GET event pages / PATCH event marks | {} / {} | {} / {} |".format(
        n(req(rk, "GET /v2/event")), n(req(rk, "PATCH /v2/event/{id}")),
        n(req(pk, "GET /v2/event")), n(req(pk, "PATCH /v2/event/{id}"))))
    w("| process-events: peak RSS | {} | {} |".format(
        mib(r["measured"]["max_rss_kib"]), mib(p["measured"]["max_rss_kib"]) if p else "n/a"))
    w("| process-events: exactly one transfer of amount - fee per credit | {} of {} | {} of {} |".format(
        n(r["exactly_once"]), n(r["credits"]), n(p["exactly_once"]) if p else "n/a", n(p["credits"]) if p else ""))
hr, hl, p1, p2 = hooks["rust-high"], hooks["rust-low"], hooks["python-1"], hooks["python-2"]
if hl and p1:
    best = max((h for h in (p1, p2) if h), key=lambda h: h["throughput_eps"])
    w("| webhooks: max throughput, 32 keep-alive clients (verified + committed, events/s) | {:.0f} | {:.0f} (uvicorn, {}) |".format(
        hl["throughput_eps"], best["throughput_eps"], "2 workers" if best is p2 else "1 worker"))
    w("| webhooks: latency at max load, p50 / p99 | {:.1f} / {:.1f} ms | {:.1f} / {:.1f} ms |".format(
        hl["throughput_p50_ms"], hl["throughput_p99_ms"], best["throughput_p50_ms"], best["throughput_p99_ms"]))
    w("| webhooks: latency at {:.0f} events/s (open loop), p50 / p99 | {:.2f} / {:.2f} ms | {:.2f} / {:.2f} ms (1 worker) |".format(
        hl["rate"], hl["rate_p50_ms"], hl["rate_p99_ms"], p1["rate_p50_ms"], p1["rate_p99_ms"]))
    w("| webhooks: peak RSS of the receiver | {} | {} (1 worker), {} (2 workers: summed over {} processes) |".format(
        mib(hl["vm_hwm_kib"]), mib(p1["vm_hwm_kib"]), mib(p2["vm_hwm_kib"]) if p2 else "n/a",
        p2["processes"] if p2 else 0))
w("| binary size | {} ({} stripped) | n/a (interpreter + venv) |".format(
    mib(int(facts.get("bin_size", 0)) / 1024), mib(int(facts.get("bin_stripped_size", 0)) / 1024)))
w("")

# ---- findings -----------------------------------------------------------------------------------
if proc and proc["rust"].get("breakdown"):
    r = proc["rust"]
    b = r["breakdown"]
    k = b["kinds"]
    get, patch, post = k.get("GET /v2/event"), k.get("PATCH /v2/event/{id}"), k.get("POST /v2/transfer")
    w("## What stands out")
    w("")
    if get and patch and post:
        patch_span = patch["last_end_s"] - patch["first_start_s"]
        patch_own = patch["steady_after_s"] + patch["then_after_s"]
        w("- **process-events, {} credits, {} wall.** Pulling the backlog: {} GET pages, {} in round trips "
          "(p50 {:.0f} ms a page), each page recorded as it arrives. **Marking events delivered: {} PATCHes** "
          "(every pulled event: `created`, `paid` and `credited` per invoice, not only the {} credits), span {} "
          "({:.0f}% of the wall), {} of it between answers inside stark-sweep ({:.2f} ms per event; 4 PATCHes in "
          "flight, the marks recorded in one transaction). The transfers themselves: {} POSTs, {} from first "
          "to last.".format(
              n(r["credits"]), secs(b["wall_s"]), n(get["count"]), secs(get["rtt_s"]), get["p50_ms"],
              n(patch["count"]), n(r["credits"]), secs(patch_span), 100 * patch_span / b["wall_s"],
              secs(patch_own), 1e3 * patch["steady_after_s"] / max(patch["count"], 1), post["count"],
              secs(post["last_end_s"] - post["first_start_s"])))
        w("- Against the real API every request is a network round trip: each millisecond of round trip adds "
          "about {} to the PATCH phase ({} requests, 4 in flight) and {} to the transfer phase (sequential). "
          "Stark Bank has no bulk PATCH, so the per-event mark is the cost of a large backlog.".format(
              secs(patch["count"] / 4000), n(patch["count"]), secs(post["count"] / 1000)))
    w("- **Peak RSS of process-events: {}** for {} pulled events (pages are recorded as they arrive; "
      "{:.1f} KiB per pulled event).".format(
          mib(r["measured"]["max_rss_kib"]), n(r["report"]["eventsPulled"]),
          r["measured"]["max_rss_kib"] / max(r["report"]["eventsPulled"], 1)))
    p = proc.get("python")
    if p:
        pm = p["measured"]
        mark = p["own"]["phases"]["mark_delivered_s"]
        w("- The SDK sweep took {} for {} credits ({} of it marking {} events delivered, {:.1f} ms each; user CPU "
          "{}: every SDK request is signed in pure Python and opens a new connection). Linear extrapolation to "
          "{} credits (an estimate, not measured): about {}.".format(
              secs(pm["wall_s"]), n(p["credits"]), secs(mark), n(p["own"]["marked_delivered"]),
              1e3 * mark / max(p["own"]["marked_delivered"], 1), secs(pm["user_s"]), n(r["credits"]),
              secs(pm["wall_s"] * r["credits"] / max(p["credits"], 1))))
    d = proc.get("direct")
    if d:
        total = sum(d["requests"].values())
        w("- Straight to the emulator on a kept-alive connection (no proxy), stark-sweep spends {:.1f} ms per "
          "request on average ({} for {} requests). Both tiny_http servers set TCP_NODELAY (`src/net.rs`): "
          "without it every answer on a reused connection waited ~44 ms for a delayed ACK, which an earlier "
          "run of this benchmark found.".format(
              1e3 * d["measured"]["wall_s"] / max(total, 1), secs(d["measured"]["wall_s"]), n(total)))
    w("")

# ---- process-events -----------------------------------------------------------------------------
if proc:
    r = proc["rust"]
    m = r["measured"]
    rep = r["report"]
    rk = r["requests"]
    posts = req(rk, "POST /v2/transfer")
    w("## process-events: {} pending credits".format(n(r["credits"])))
    w("")
    w("Requirement: {} pending credits are processed in at most 100 transfer requests. "
      "Measured: **{} transfer requests** ({} transfers; {}), **{}** wall for the whole run.".format(
          n(r["credits"]), posts, n(rep["transfersSent"]),
          "within the limit" if posts <= 100 else "OVER THE LIMIT", secs(m["wall_s"])))
    w("")
    w("Setup (not timed): {} invoices tagged `stark-sweep` created 100 per request with "
      "`Client::create_invoices`, each paid with `Sandbox::pay_invoice` (credit delay 0) and credited "
      "({:.1f} s). Then one run of `stark-sweep process-events --json` with a fresh database (ext4 disk), timed "
      "from spawn to exit under `/usr/bin/time`.".format(n(r["invoices"]), r["setup_s"]))
    w("")
    w("The run goes through a recording proxy (`bench/common/proxy.rs`) that forwards each request to the "
      "emulator and records when each request started and ended, for the breakdown below; *Straight to the "
      "emulator* shows a run without it.")
    w("")
    w("| Run | |")
    w("|---|---|")
    w("| Wall | {} (user {}, sys {}) |".format(secs(m["wall_s"]), secs(m["user_s"]), secs(m["sys_s"])))
    w("| Peak RSS of the child | {} |".format(mib(m["max_rss_kib"])))
    w("| Emulator + proxy CPU during the run (harness process) | {} |".format(secs(r["harness_cpu_s"])))
    if r.get("first_transfer_s") is not None:
        w("| First / last transfer POST answered (stark-sweep's log) | {} / {} after start |".format(
            secs(r["first_transfer_s"]), secs(r["last_transfer_s"])))
        w("| After the last transfer POST (settle + mark delivered) | {} ({:.0f}% of the wall) |".format(
            secs(m["wall_s"] - r["last_transfer_s"]), 100 * (m["wall_s"] - r["last_transfer_s"]) / m["wall_s"]))
    w("| Requests | {} |".format(", ".join("`{}` {}".format(k, n(v)) for k, v in rk.items())))
    w("| Events pulled / marked delivered | {} / {} |".format(n(rep["eventsPulled"]), n(rep["markedDelivered"])))
    w("| Transfers at the emulator / failed | {} / {} |".format(n(r["transfers_at_emulator"]), r["failed_transfers"]))
    w("| Exactly one transfer of amount - fee | {} of {} credits |".format(n(r["exactly_once"]), n(r["credits"])))
    w("")
    b = r.get("breakdown")
    if b:
        w("### Where the time goes")
        w("")
        w("stark-sweep sends one request at a time (except the delivered marks, 4 in flight), so the run is "
          "mostly a sequence of round trips (proxy + emulator) "
          "and stark-sweep's own time between them: *own, between* is the gap before the next request of the "
          "same kind (per-request work: signing, SQLite), *own, after* the gap before a request of another kind "
          "or the exit (a step in between: recording, applying, deciding, claiming, settling).")
        w("")
        w("| Request kind | Requests | Round trips (sum) | p50 / p99 round trip | Own, between | Own, after | Span (from start) |")
        w("|---|---|---|---|---|---|---|")
        total_rtt = 0.0
        for kind, k in b["kinds"].items():
            total_rtt += k["rtt_s"]
            w("| `{}` | {} | {} | {:.2f} / {:.2f} ms | {} | {} | {:.2f}-{:.2f} s |".format(
                kind, n(k["count"]), secs(k["rtt_s"]), k["p50_ms"], k["p99_ms"], secs(k["steady_after_s"]),
                secs(k["then_after_s"]), k["first_start_s"], k["last_end_s"]))
        w("| before the first request (process start, config, SQLite open) | | | | {} | | |".format(
            secs(b["before_first_s"])))
        own = b["wall_s"] - total_rtt
        if own >= 0:
            w("| **total** | | **{}** | | **{} own** ({:.0f}% of the wall) | | |".format(
                secs(total_rtt), secs(own), 100 * own / b["wall_s"]))
        else:
            w("| **total** | | **{}** (overlapping: the marks are 4 in flight, so this exceeds the wall) | | | | |".format(
                secs(total_rtt)))
        w("")
        patch = b["kinds"].get("PATCH /v2/event/{id}")
        if patch:
            span = patch["last_end_s"] - patch["first_start_s"]
            w("**Marking events delivered**: {} PATCHes, one per pulled event (every event of the backlog, not "
              "only credits: each invoice has `created`, `paid` and `credited` events), span {} of the {} wall "
              "({:.0f}%): {} in round trips (summed over 4 in flight) and {} inside stark-sweep between them ({:.2f} "
              "ms per event; the marks are recorded in one transaction at the end).".format(
                  n(patch["count"]), secs(span), secs(b["wall_s"]), 100 * span / b["wall_s"], secs(patch["rtt_s"]),
                  secs(patch["steady_after_s"]), 1e3 * patch["steady_after_s"] / max(patch["count"], 1)))
            w("")
        get = b["kinds"].get("GET /v2/event")
        if get:
            w("**Pulling the backlog**: {} pages of 100 events, {} in round trips (p50 {:.1f} ms a page). The "
              "emulator filters the whole event list for each page (it serializes only the page), so its page "
              "cost grows slowly with the backlog; that part is the emulator's, not stark-sweep's.".format(
                  n(get["count"]), secs(get["rtt_s"]), get["p50_ms"]))
            w("")
    d = proc.get("direct")
    if d:
        dm = d["measured"]
        total = sum(d["requests"].values())
        w("### Straight to the emulator (keep-alive, no proxy), {} credits".format(n(d["credits"])))
        w("")
        pk = (r.get("breakdown") or {}).get("kinds", {}).get("PATCH /v2/event/{id}")
        w("Wall {} for {} requests ({:.1f} ms a request on average; {}).{} The difference from the "
          "proxied run is the proxy's fresh connection per request, not stark-sweep.".format(
              secs(dm["wall_s"]), n(total), 1e3 * dm["wall_s"] / max(total, 1),
              ", ".join("`{}` {}".format(k, n(v)) for k, v in d["requests"].items()),
              " Through the proxy (above), a PATCH costs {:.2f} ms of round trip (p50) plus {:.2f} ms inside "
              "stark-sweep.".format(pk["p50_ms"], 1e3 * pk["steady_after_s"] / max(pk["count"], 1)) if pk else ""))
        w("")
    p = proc.get("python")
    if p:
        pm = p["measured"]
        own = p["own"]
        w("### The official SDK, same job, {} credits".format(n(p["credits"])))
        w("")
        w("`bench/python/process_events.py`: `starkbank.event.query(is_delivered=False)`, transfers 100 per "
          "`starkbank.transfer.create`, then `starkbank.event.update(id, is_delivered=True)` per event. No local "
          "state (no durable claims, no recovery), so it does less than stark-sweep. Run on {} credits, not {}: "
          "every SDK request is signed with pure-Python ECDSA.".format(n(p["credits"]), n(proc["invoices"])))
        w("")
        w("| | |")
        w("|---|---|")
        w("| Wall (process start to exit) | {} (user {}, sys {}) |".format(secs(pm["wall_s"]), secs(pm["user_s"]), secs(pm["sys_s"])))
        w("| Peak RSS | {} |".format(mib(pm["max_rss_kib"])))
        w("| Phases | list events {}, create transfers {}, mark delivered {} |".format(
            secs(own["phases"]["list_events_s"]), secs(own["phases"]["create_transfers_s"]),
            secs(own["phases"]["mark_delivered_s"])))
        w("| Requests | {} |".format(", ".join("`{}` {}".format(k, n(v)) for k, v in p["requests"].items())))
        w("| Exactly one transfer of amount - fee | {} of {} credits |".format(n(p["exactly_once"]), n(p["credits"])))
        w("")

# ---- webhooks -----------------------------------------------------------------------------------
w("## Webhooks: verify, store durably, answer")
w("")
w("Load generator: `webhook_load` (release), the same for every receiver: ~1.4 KiB `invoice`/`credited` "
  "events, pre-signed (secp256k1), sent over 32 keep-alive connections as fast as answered for {} s, then "
  "open loop at a fixed rate (latency counted from each event's scheduled time). Every 200 was checked to be a "
  "row in the receiver's SQLite file. The FastAPI app (`bench/python/webhook_app.py`) verifies with "
  "`starkbank.event.parse` (public key pre-seeded in the SDK's cache) and commits with WAL + "
  "`synchronous=FULL` before answering, like serve-webhook.".format(facts.get("load_seconds", "10")))
w("")
w("| Receiver | Max load: events/s | p50 / p99 | Fixed rate | p50 / p99 / max | Non-200 | Peak RSS | Rows = 200s |")
w("|---|---|---|---|---|---|---|---|")
names = {"rust-low": "stark-sweep serve-webhook", "rust-high": "stark-sweep serve-webhook",
         "rust-scraped": "stark-sweep serve-webhook, /metrics scraped every 1 s",
         "python-1": "FastAPI + SDK, uvicorn 1 worker", "python-2": "FastAPI + SDK, uvicorn 2 workers"}
for key in ("rust-low", "rust-high", "rust-scraped", "python-1", "python-2"):
    h = hooks[key]
    if not h:
        continue
    w("| {} | {:.0f} | {:.1f} / {:.1f} ms | {:.0f}/s | {:.2f} / {:.2f} / {:.1f} ms | {} | {} | {} |".format(
        names[key], h["throughput_eps"], h["throughput_p50_ms"], h["throughput_p99_ms"], h["rate"],
        h["rate_p50_ms"], h["rate_p99_ms"], h["rate_max_ms"], h["throughput_other"] + h["rate_other"],
        mib(h["vm_hwm_kib"]), "yes" if h["rows"] == h["throughput_ok"] + h["rate_ok"] else "NO ({} rows)".format(h["rows"])))
w("")

hs = hooks.get("rust-scraped")
if hs and hooks.get("rust-high") and hs.get("scrapes"):
    hh = hooks["rust-high"]
    w("Scraping `GET /metrics` every second (each scrape reads the store) during the same load: {:.0f} events/s "
      "against {:.0f} without, {} scrapes answered (p50 {:.1f} ms, max {:.1f} ms, {:.1f} KiB each); one scrape costs "
      "the listener {:.2f} ms of CPU with {} events in the store (200 back to back after the load), about {:.2f} % "
      "of one core at one scrape a second.".format(
          hs["throughput_eps"], hh["throughput_eps"], hs["scrapes"], hs["scrape_p50_ms"], hs["scrape_max_ms"],
          hs["scrape_bytes"] / 1024, hs.get("scrape_cpu_ms") or 0, n(hs["rows"] or 0), (hs.get("scrape_cpu_ms") or 0) / 10))
    w("")

# ---- issue-invoices ------------------------------------------------------------------------------
if issue:
    w("## issue-invoices: one slot")
    w("")
    w("Each run is a fresh process with a fresh database against the emulator (in-process, real time): "
      "stark-sweep claims the slot in SQLite, creates its 8-12 invoices in one request and records them; "
      "the SDK script (`bench/python/issue_invoices.py`) makes the same one request and nothing else. Runs "
      "alternate between the two.")
    w("")
    w("| | Median wall | Min / max | Median user+sys | Median peak RSS | Invoices per run |")
    w("|---|---|---|---|---|---|")
    for label, key in (("stark-sweep issue-invoices", "rust"), ("SDK `invoice.create`", "python")):
        s = issue.get(key)
        if not s:
            continue
        cpu = sorted(m["user_s"] + m["sys_s"] for m in s["runs"])
        w("| {} | {} | {} / {} | {} | {} | {}-{} |".format(
            label, ms(s["median_wall_s"]), ms(s["min_wall_s"]), ms(s["max_wall_s"]), ms(cpu[len(cpu) // 2]),
            mib(s["median_max_rss_kib"]), min(s["invoices_per_run"]), max(s["invoices_per_run"])))
    w("")

# Routine runs on long histories (bench/history.rs writes the section; the markers let it
# replace just that section when run alone: `history --report bench/REPORT.md`).
history_md = os.path.join(OUT, "history.md")
if os.path.exists(history_md):
    with open(history_md) as f:
        w("<!-- history: written by bench/history.rs (cargo run --release --example history) -->")
        w(f.read().rstrip())
        w("<!-- /history -->")
        w("")

w("## Binary")
w("")
w("`target/release/stark-sweep`: {} bytes ({}); stripped: {} bytes ({}).".format(
    n(int(facts.get("bin_size", 0))), mib(int(facts.get("bin_size", 0)) / 1024),
    n(int(facts.get("bin_stripped_size", 0))), mib(int(facts.get("bin_stripped_size", 0)) / 1024)))
w("")
w("## Raw harness output")
w("")
for name in ("issue.txt", "process.txt", "hook-rust-low.txt", "hook-rust-high.txt", "hook-rust-scraped.txt",
             "hook-python-1.txt", "hook-python-2.txt"):
    path = os.path.join(OUT, name)
    if os.path.exists(path):
        with open(path) as f:
            w("`{}`:".format(name))
            w("```text")
            w(f.read().rstrip())
            w("```")
w("")
w("## Reproduce")
w("")
w("```console")
w("$ bench/run            # builds release, makes bench/.venv, runs everything, rewrites bench/REPORT.md")
w("```")
w("Single benchmarks: `cargo run --release --example process_events -- --invoices 10000 --direct-invoices 300`, "
  "`cargo run --release --example issue_invoices -- --runs 9`, `cargo run --release --example history -- "
  "--credits 1000,100000` (add `--before OLD_BIN` for an older release next to it), `cargo run --release --example webhook_load -- "
  "--concurrency 32 --seconds 10 --rate 500 --rate-seconds 10` (add `--target-url`/`--signing-key` for another "
  "receiver). Raw JSON of this run: kept in the directory `bench/run` prints at the end.")
print("\n".join(lines))
