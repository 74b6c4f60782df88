"""``/api/v2/vps/{id}/actions/upgrade`` and ``/actions/config``: buy or drop snapshot slots."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from vpsnap.api.capacity_schemas import (
    ConfigActionsOut,
    ConfigResourcesOut,
    ConfigureIn,
    ConfigureOut,
    CurrentProductOut,
    PlanOut,
    PriceChangeOut,
    PriceOut,
    QuantityOptionOut,
    UpgradeOptionsOut,
)
from vpsnap.api.deps import ReadVm, ServicesDep, require
from vpsnap.api.openapi import problem_responses
from vpsnap.api.params import VpsIdPath
from vpsnap.api.presenters import gate_out
from vpsnap.domain.auth import Principal, Scope
from vpsnap.domain.capacity import SNAPSHOT_SLOTS_KEY, PriceChange, format_amount
from vpsnap.domain.capacity import Price as DomainPrice
from vpsnap.services.capacity import CapacityService, ConfigOutcome, UpgradeOptions

router = APIRouter(prefix="/api/v2/vps/{vps_id}/actions", tags=["Capacity"])


async def get_capacity(services: ServicesDep) -> CapacityService:
    return services.capacity


CapacityDep = Annotated[CapacityService, Depends(get_capacity)]
WriteVm = Annotated[Principal, Depends(require(Scope.WRITE_VM))]

_READ_ERRORS = problem_responses("forbidden", "vps_not_found")
_CONFIG_ERRORS = problem_responses(
    "forbidden",
    "vps_not_found",
    "conflict",
    "snapshot_slots_in_use",
    "vps_not_ready",
    "billing_unavailable",
)


def price_out(price: DomainPrice) -> PriceOut:
    return PriceOut(
        amount=format_amount(price.amount),
        currency_code=price.currency_code,
        billing_cycle=price.billing_cycle,
    )


def upgrade_options_out(options: UpgradeOptions) -> UpgradeOptionsOut:
    vps, plan = options.vps, options.plan
    if plan is not None:
        current_price: PriceOut | None = price_out(plan.price)
    elif vps.billing is not None:
        # The VPS's own billing record, as the inventory shows it (already a money string).
        current_price = PriceOut(
            amount=vps.billing.amount,
            currency_code=vps.billing.currency_code,
            billing_cycle=vps.billing.billing_cycle,
        )
    else:
        current_price = None
    option = options.option
    return UpgradeOptionsOut(
        vps_id=vps.id,
        current_product=CurrentProductOut(
            id=plan.id if plan is not None else vps.plan,
            name=plan.name if plan is not None else None,
            price=current_price,
            snapshot_slots=vps.snapshot_slots,
            included_snapshot_slots=options.included_slots,
        ),
        configurable_options=[
            QuantityOptionOut(
                key=SNAPSHOT_SLOTS_KEY,
                label=option.label,
                min=option.min,
                max=option.max,
                step=option.step,
                current_value=vps.snapshot_slots,
                included_value=options.included_slots,
                unit_price=price_out(option.unit_price),
            )
        ]
        if option is not None
        else [],
        available_plans=[
            PlanOut(
                id=p.id,
                name=p.name,
                price=price_out(p.price),
                snapshot_slots=p.snapshot_slots,
                is_current=p.id == vps.plan,
            )
            for p in options.plans
        ],
    )


def price_change_out(change: PriceChange) -> PriceChangeOut:
    return PriceChangeOut(
        amount=format_amount(change.amount),
        recurring_amount=format_amount(change.recurring_amount),
        additional_recurring_amount=format_amount(change.additional_recurring_amount),
        currency_code=change.currency_code,
        billing_cycle=change.billing_cycle,
    )


def configure_out(outcome: ConfigOutcome) -> ConfigureOut:
    return ConfigureOut(
        dry_run=outcome.dry_run,
        resources=ConfigResourcesOut(snapshot_slots=outcome.snapshot_slots),
        price_change=price_change_out(outcome.price_change),
        payment_invoice=None,
        actions=ConfigActionsOut(can_commit=gate_out(outcome.can_commit)),
    )


@router.get(
    "/upgrade",
    operation_id="getUpgradeOptions",
    response_model=UpgradeOptionsOut,
    responses=_READ_ERRORS,
)
async def get_upgrade_options(
    vps_id: VpsIdPath, principal: ReadVm, capacity: CapacityDep
) -> UpgradeOptionsOut:
    """The VPS's product, what can be bought (snapshot slots: range, step, unit price), and the
    operator's plans."""
    return upgrade_options_out(await capacity.upgrade_options(principal, vps_id))


@router.post(
    "/config",
    operation_id="configureVps",
    response_model=ConfigureOut,
    responses=_CONFIG_ERRORS,
)
async def configure_vps(
    vps_id: VpsIdPath, body: ConfigureIn, principal: WriteVm, capacity: CapacityDep
) -> ConfigureOut:
    """Preview (`dryRun: true`) or commit a new snapshot slot count. A commit is confirmed by
    the operator's billing webhook when one is configured, and applies at once."""
    outcome = await capacity.configure(
        principal,
        vps_id,
        {SNAPSHOT_SLOTS_KEY: body.resources.snapshot_slots},
        dry_run=body.dry_run,
        billing_cycle=body.billing_cycle,
        cancel_existing_invoice=body.cancel_existing_invoice,
    )
    return configure_out(outcome)
