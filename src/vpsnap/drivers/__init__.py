"""Hypervisor adapters behind ``vpsnap.domain.ports.HypervisorDriver``."""
