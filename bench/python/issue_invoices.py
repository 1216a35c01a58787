"""One slot's batch with the official SDK: 8-12 invoices in one `starkbank.invoice.create`.

The same request stark-sweep's issue-invoices makes (random pt_BR-ish names, valid CPFs,
random amounts, due in 2 days, 5 days to expire, tags), without its SQLite claim. Timed from
outside (process start to exit) by bench/issue_invoices.rs. Env: STARKBANK_PROJECT_ID,
STARKBANK_PRIVATE_KEY_PATH, STARKBANK_API_URL.
"""

import json
import random
from datetime import datetime, timedelta, timezone

import sdk_host

import starkbank

FIRST = ["Ana", "Bruno", "Carla", "Diego", "Elisa", "Felipe", "Gabriela", "Heitor", "Isabela", "João"]
LAST = ["Silva", "Souza", "Oliveira", "Lima", "Pereira", "Costa", "Rodrigues", "Almeida", "Nunes", "Gomes"]


def cpf():
    digits = [random.randint(0, 9) for _ in range(9)]
    for n in (10, 11):
        s = sum(d * w for d, w in zip(digits, range(n, 1, -1)))
        digits.append(0 if s % 11 < 2 else 11 - s % 11)
    d = "".join(map(str, digits))
    return "{}.{}.{}-{}".format(d[:3], d[3:6], d[6:9], d[9:])


def main():
    sdk_host.use_project()
    now = datetime.now(timezone.utc)
    n = random.randint(8, 12)
    invoices = starkbank.invoice.create([
        starkbank.Invoice(
            amount=random.randint(1_000, 50_000),
            name="{} {}".format(random.choice(FIRST), random.choice(LAST)),
            tax_id=cpf(),
            due=now + timedelta(days=2),
            expiration=timedelta(days=5),
            tags=["stark-sweep", "sdk-bench"],
        )
        for _ in range(n)
    ])
    assert len(invoices) == n
    print(json.dumps({"invoices": n, "requests": sdk_host.stats()}))


main()
