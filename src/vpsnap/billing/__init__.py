"""Adapters to the operator's billing system (implementations of ``BillingGateway``)."""
