"""Points the official SDK at the emulator: the one thing every benchmark script shares.

starkcore builds `https://sandbox.api.starkbank.com/v2/...` inline, so the host is swapped one
level down, in `requests.Session.request`; everything else (paths, query encoding, bodies,
signing, status handling) runs unchanged. Also counts and times each request by kind, which
is how the scripts report requests and where the time went.
"""

import os
import re
import time

import requests

import starkbank

REAL_HOST = "https://sandbox.api.starkbank.com/"
URL = os.environ["STARKBANK_API_URL"].rstrip("/")
STATS = {}  # "METHOD /v2/path/{id}" -> [count, seconds]

_request = requests.Session.request


def _kind(method, url):
    path = url.split("?", 1)[0][len(URL):]
    path = re.sub(r"/+", "/", path)
    path = re.sub(r"/\d+(?=/|$)", "/{id}", path)
    return "{} {}".format(method.upper(), path)


def _to_emulator(self, method, url, *args, **kwargs):
    if isinstance(url, str) and url.startswith(REAL_HOST):
        url = URL + "/" + url[len(REAL_HOST):]
    t0 = time.perf_counter()
    try:
        return _request(self, method, url, *args, **kwargs)
    finally:
        entry = STATS.setdefault(_kind(method, url), [0, 0.0])
        entry[0] += 1
        entry[1] += time.perf_counter() - t0


requests.Session.request = _to_emulator


def use_project():
    with open(os.environ["STARKBANK_PRIVATE_KEY_PATH"]) as f:
        key = f.read()
    starkbank.user = starkbank.Project(environment="sandbox", id=os.environ["STARKBANK_PROJECT_ID"], private_key=key)


def stats():
    return {k: {"count": v[0], "seconds": round(v[1], 4)} for k, v in sorted(STATS.items())}
