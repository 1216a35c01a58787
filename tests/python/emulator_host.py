"""Points the official SDK at the stark-sweep emulator by swapping only the host.

starkcore builds `https://sandbox.api.starkbank.com/v2/...` inline in
`starkcore.utils.request.fetch` (the environment-to-host map is a literal inside it), so no SDK
function can be patched without copying SDK code. We patch the transport instead:
`requests.Session.request` rewrites that one prefix to the emulator's URL. Everything else the
SDK does (paths, query encoding, bodies, signing, status handling) runs unchanged.
"""

import requests

REAL_HOST = "https://sandbox.api.starkbank.com/"


def point_sdk_at(emulator_url):
    """Sends every request the SDK makes to the sandbox host to `emulator_url` instead."""
    base = emulator_url.rstrip("/")
    original = requests.Session.request

    # Same parameter names as requests' own: the SDK passes `method` and `url` by keyword.
    def to_emulator(self, method, url, *args, **kwargs):
        if isinstance(url, str) and url.startswith(REAL_HOST):
            url = base + "/" + url[len(REAL_HOST):]
        return original(self, method, url, *args, **kwargs)

    requests.Session.request = to_emulator
