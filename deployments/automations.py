"""Create or update Saras' alert automations on the Prefect server in PREFECT_API_URL.

    python deployments/automations.py            (deployments/bootstrap.sh runs it)

Each ``deployments/automations/*.yaml`` is one automation (Prefect's own schema, as
``prefect automation create --from-file`` reads it) whose notification actions name the block
``{{ alert_block_document_id }}``. The operator chooses that block:

- ``SARAS_ALERT_BLOCK=<block-type-slug>/<block-name>``: an existing notification block (Slack,
  Microsoft Teams, e-mail, PagerDuty, ...), e.g. ``slack-webhook/saras-alerts``;
- otherwise ``SARAS_ALERT_WEBHOOK_URL``: a webhook (the default kind), saved as the
  ``custom-webhook/saras-alerts`` block, which POSTs ``{"subject": ..., "body": ...}``.

With neither, the automations are created disabled (and say so): re-run with one set.
Re-running updates the automations of the same names; nothing is duplicated.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect.client.orchestration import PrefectClient, get_client
from prefect.events.schemas.automations import AutomationCore

HERE = Path(__file__).resolve().parent
PLACEHOLDER = "{{ alert_block_document_id }}"
DEFAULT_BLOCK = "saras-alerts"


def load_automations(block_id: UUID | None) -> list[AutomationCore]:
    """Read every automation file, with the notification block filled in (or disabled)."""
    automations = []
    for path in sorted((HERE / "automations").glob("*.yaml")):
        text = path.read_text()
        if block_id is not None:
            text = text.replace(PLACEHOLDER, str(block_id))
        data: dict[str, Any] = yaml.safe_load(text)
        if block_id is None:
            data["enabled"] = False
            data["actions"] = [a for a in data["actions"] if a.get("type") != "send-notification"]
        automations.append(AutomationCore.model_validate(data))
    return automations


async def alert_block(client: PrefectClient) -> UUID | None:
    """Return the id of the notification block the operator chose, creating the webhook one."""
    chosen = os.environ.get("SARAS_ALERT_BLOCK", "").strip()
    if chosen:
        type_slug, _, name = chosen.partition("/")
        if not name:
            raise SystemExit(f"SARAS_ALERT_BLOCK={chosen!r}: expected <block-type-slug>/<name>")
        document = await client.read_block_document_by_name(name, type_slug)
        return document.id
    url = os.environ.get("SARAS_ALERT_WEBHOOK_URL", "").strip()
    if not url:
        return None
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(  # type: ignore[call-arg]
        name="saras",
        url=url,
        method="POST",
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
    )
    return await block.save(DEFAULT_BLOCK, overwrite=True, client=client)


async def apply() -> list[tuple[str, str]]:
    """Create or update every automation; return (name, what happened) pairs."""
    done = []
    async with get_client() as client:
        block_id = await alert_block(client)
        for automation in load_automations(block_id):
            existing = await client.read_automations_by_name(automation.name)
            if existing:
                await client.update_automation(existing[0].id, automation)
                for duplicate in existing[1:]:
                    await client.delete_automation(duplicate.id)
                done.append((automation.name, "updated"))
            else:
                await client.create_automation(automation)
                done.append((automation.name, "created"))
    if block_id is None:
        print(
            "alerts created DISABLED: set SARAS_ALERT_WEBHOOK_URL (or SARAS_ALERT_BLOCK) and "
            "run deployments/bootstrap.sh again",
            file=sys.stderr,
        )
    return done


def main() -> None:
    """Apply the automations and say what changed."""
    for name, what in asyncio.run(apply()):
        print(f"automation {name}: {what}")


if __name__ == "__main__":
    main()
