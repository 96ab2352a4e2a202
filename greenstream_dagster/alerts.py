"""Alerts: one JSON object per line in ``alerts.jsonl``, the log, and a webhook when configured.

The webhook gets Slack-compatible JSON (``{"text": ...}`` plus the fields). Its URL is a secret:
it is never written to the alerts file or the log, even when the call fails.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.request
from typing import Any

from .settings import Settings

WEBHOOK_TIMEOUT_SECONDS = 5

_log = logging.getLogger("greenstream.alerts")


def raise_alert(
    settings: Settings,
    kind: str,
    message: str,
    details: dict[str, Any] | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Record and send one alert; returns the record. Never raises for a failed delivery."""
    record = {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "kind": kind,
        "message": message,
        **(details or {}),
    }
    line = json.dumps(record, default=str, ensure_ascii=False)
    settings.alerts_path.parent.mkdir(parents=True, exist_ok=True)
    with open(settings.alerts_path, "a", encoding="utf-8") as out:
        out.write(line + "\n")
    (log or _log).warning(f"ALERT {kind}: {message}")
    if settings.alert_webhook:
        _post(settings.alert_webhook, {"text": f"GreenStream {kind}: {message}", **record}, log)
    return record


def _post(url: str, payload: dict[str, Any], log: Any) -> None:
    body = json.dumps(payload, default=str).encode("utf-8")
    try:
        # Inside the try: a URL without a scheme fails here, with the URL in the message.
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
            response.read()
    except Exception as exc:
        # A failed delivery must never fail the caller (a bad URL raises http.client.InvalidURL,
        # which is no OSError). The exception text can contain the URL: say only its kind.
        (log or _log).warning(f"alert webhook delivery failed: {type(exc).__name__}")
