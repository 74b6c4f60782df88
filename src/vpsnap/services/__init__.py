"""Use cases: one function per API action, each in one transaction, on the domain's ports."""
