"""Bodies of the capacity endpoints (``/actions/upgrade`` and ``/actions/config``).

Money is a string with exactly two decimals (``"3.00"``): JSON numbers are binary floats in
most clients, and a price must never come back as ``2.9999999``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from vpsnap.api.schemas import ApiModel, GateOut, RequestModel

Amount = str


class PriceOut(ApiModel):
    amount: Amount = Field(examples=["1.00"])
    currency_code: str = Field(examples=["EUR"])
    billing_cycle: str = Field(examples=["monthly"])


class QuantityOptionOut(ApiModel):
    key: str = Field(examples=["snapshotSlots"])
    label: str
    type: Literal["quantity"] = "quantity"
    min: int
    max: int
    step: int
    current_value: int
    included_value: int = Field(
        description="Slots included in the plan's price: only slots beyond these cost unitPrice."
    )
    unit_price: PriceOut


class CurrentProductOut(ApiModel):
    id: str | None = Field(description="The plan id; null when the VPS is on no known plan.")
    name: str | None
    price: PriceOut | None = Field(
        description="The plan's price, else the VPS's own billing; null when neither is known."
    )
    snapshot_slots: int
    included_snapshot_slots: int


class PlanOut(ApiModel):
    id: str
    name: str
    price: PriceOut
    snapshot_slots: int = Field(description="Snapshot slots included in the plan's price.")
    is_current: bool


class UpgradeOptionsOut(ApiModel):
    vps_id: str
    current_product: CurrentProductOut
    configurable_options: list[QuantityOptionOut]
    available_plans: list[PlanOut]


class ConfigResourcesIn(RequestModel):
    snapshot_slots: int = Field(
        description="The new total number of snapshot slots (not a difference).",
        examples=[5],
    )


class ConfigureIn(RequestModel):
    resources: ConfigResourcesIn
    dry_run: bool = Field(default=False, description="Preview the price; change nothing.")
    billing_cycle: str | None = Field(
        default=None,
        max_length=32,
        description="Only with dryRun: the cycle to price in (the one slots are sold in).",
    )
    cancel_existing_invoice: bool = Field(
        default=False, description="Passed to the billing webhook; vpsnap issues no invoices."
    )


class ConfigResourcesOut(ApiModel):
    snapshot_slots: int


class PriceChangeOut(ApiModel):
    amount: Amount = Field(description="Charged now (no proration): max(additional, 0).")
    recurring_amount: Amount = Field(description="The slots' cost per cycle after the change.")
    additional_recurring_amount: Amount = Field(
        description="recurringAmount minus the cost per cycle now (negative when shrinking)."
    )
    currency_code: str
    billing_cycle: str


class ConfigActionsOut(ApiModel):
    can_commit: GateOut


class ConfigureOut(ApiModel):
    dry_run: bool
    resources: ConfigResourcesOut
    price_change: PriceChangeOut
    payment_invoice: dict[str, Any] | None = Field(
        default=None, description="Always null: vpsnap issues no invoices (billing does)."
    )
    actions: ConfigActionsOut
