"""Credits, holds and settlement, payments through Stripe, postpaid invoicing (docs/billing.md)."""
