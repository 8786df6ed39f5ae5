"""Bill one tenant for one period and die by SIGKILL right after a chosen Stripe call returns,
before the step's id is committed: the crash the billing run must resume from.

``python billing_kill.py DATA_DIR STRIPE_BASE API_KEY TENANT PERIOD_JSON STEP``
(``STEP``: ``add_item`` or ``create_invoice``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from hartonomous.billing.payments_service import Period
from hartonomous.billing.stripe_payments import LocalstripePayments
from hartonomous.bootstrap import bootstrap
from hartonomous.settings import Settings


class DiesAfter(LocalstripePayments):
    step = ""

    def add_item(self, *args: Any, **kwargs: Any) -> str:
        made = super().add_item(*args, **kwargs)
        if self.step == "add_item":
            os.kill(os.getpid(), signal.SIGKILL)
        return made

    def create_invoice(self, *args: Any, **kwargs: Any) -> str:
        made = super().create_invoice(*args, **kwargs)
        if self.step == "create_invoice":
            os.kill(os.getpid(), signal.SIGKILL)
        return made


def main() -> None:
    data_dir, base, key, tenant, period, step = sys.argv[1:7]
    payments = DiesAfter(key, None, api_base=base)
    payments.step = step
    platform = bootstrap(Settings(data_dir=Path(data_dir)), payments=payments)
    platform.payments.bill(tenant, Period.from_json(json.loads(period)))
    print("billed without dying", flush=True)


if __name__ == "__main__":
    main()
