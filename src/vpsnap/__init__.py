"""vpsnap: a self-hosted VPS snapshot control plane with a HostUp-compatible API."""

__version__ = "0.1.0"
