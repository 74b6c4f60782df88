"""Audit trail and webhook outbox: rows written in the transaction of the action they describe,
delivered (webhooks) by the scheduler after commit (docs/operations.md, docs/webhooks.md)."""
