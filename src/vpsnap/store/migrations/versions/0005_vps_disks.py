"""One disk file belongs to one VPS once: ``vps_disks`` with a unique real path (hashed) and a
unique (device, inode) per node, backfilled from ``vps.disks`` (issue 9, kind 4).

The backfill indexes every existing disk by the path it was registered with (a migration may
run on any host, so it reads no files: ``file_id`` stays NULL for these rows). If existing rows
already share a disk, the upgrade stops and names them: they cannot both keep it, and choosing
for the operator could hand one customer's disk to another.

Revision ID: 0005
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0009"
branch_labels = None
depends_on = None


def _disks(value: Any) -> list[str]:
    if isinstance(value, str):  # SQLite hands JSON back as text through plain SQL
        value = json.loads(value)
    return [str(d) for d in value or []]


def upgrade() -> None:
    table = op.create_table(
        "vps_disks",
        sa.Column(
            "vps_id",
            sa.String(40),
            sa.ForeignKey("vps.id", name="fk_vps_disks_vps_id_vps"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("node", sa.String(100), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("path_key", sa.String(64), nullable=False),
        sa.Column("file_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("vps_id", "position", name="pk_vps_disks"),
        sa.UniqueConstraint("node", "path_key", name="uq_vps_disks_node_path_key"),
        sa.UniqueConstraint("node", "file_id", name="uq_vps_disks_node_file_id"),
    )
    connection = op.get_bind()
    rows = connection.execute(
        sa.text(
            "SELECT vps.id, vps.name, vps.node, vps.disks, accounts.name AS account "
            "FROM vps JOIN accounts ON accounts.id = vps.account_id ORDER BY vps.id"
        )
    ).mappings()
    owners: dict[tuple[str, str], str] = {}
    clashes: list[str] = []
    backfill: list[dict[str, Any]] = []
    for row in rows:
        owner = f"VPS {row['name']} ({row['id']}, account {row['account']})"
        for position, path in enumerate(_disks(row["disks"])):
            key = (row["node"], path)
            if key in owners:
                clashes.append(f"{path} on node {row['node']}: {owners[key]} and {owner}")
                continue
            owners[key] = owner
            backfill.append(
                {
                    "vps_id": row["id"],
                    "position": position,
                    "node": row["node"],
                    "path": path,
                    "path_key": hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest(),
                    "file_id": None,
                }
            )
    if clashes:
        raise RuntimeError(
            "vpsnap cannot upgrade this database: a disk file is registered more than once "
            "(one disk file belongs to one VPS once; two registrations of it corrupt each "
            "other's snapshots): "
            + "; ".join(clashes)
            + ". Give each VPS its own disk or remove the wrong registration (its rows in "
            "snapshots, jobs, snapshot_schedules and vps), then run vpsnap again."
        )
    if backfill:
        op.bulk_insert(table, backfill)


def downgrade() -> None:
    op.drop_table("vps_disks")
