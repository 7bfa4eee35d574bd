"""The AmazonSES format: decode an Amazon SES JSON notification (bounce, complaint or delivery)."""

from __future__ import annotations

import json
from typing import Any

from .. import codes
from ..hosts import find_host
from ..model import Message, Rising
from ..text import select, sweep
from .base import Records
from .registry import register


def _ses_json(payload: str) -> dict[str, Any] | None:
    text = payload
    p1 = payload.find("\n\n--\n")
    if p1 > 0:
        text = payload[:p1]
    text = text.replace("!\n ", "")
    p2 = text.find('"Message"')
    if p2 > 0:
        # An SNS envelope carries the SES notification as an escaped JSON string
        text = text.replace("\\", "")
        text = "{" + select(text, "{", "\n", p2 + 9)
        text = text.rstrip(",").rstrip('"')
    text = text.strip()
    if "notificationType" not in text or not text.startswith("{") or not text.endswith("}"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


@register("AmazonSES", order=90)
def amazonses(msg: Message) -> Rising | None:
    """Decode an Amazon SES JSON notification (bounce, complaint or delivery)."""
    data = _ses_json(msg.payload)
    if data is None:
        return None
    kind = data.get("notificationType")
    recs = Records()
    if kind == "Bounce":
        bounce = data.get("bounce") or {}
        for item in bounce.get("bouncedRecipients") or []:
            rec = recs.add(str(item.get("emailAddress", "")))
            rec.diagnosis = sweep(str(item.get("diagnosticCode", "")))
            rec.command = codes.find_command(rec.diagnosis)
            rec.action = str(item.get("action", ""))
            rec.status = codes.find_status(str(item.get("status", "")))
            rec.reply_code = codes.find_reply(rec.diagnosis, rec.status)
            rec.date = str(bounce.get("timestamp", ""))
            rec.lhost = find_host(str(bounce.get("reportingMTA", "")))
    elif kind == "Complaint":
        complaint = data.get("complaint") or {}
        for item in complaint.get("complainedRecipients") or []:
            rec = recs.add(str(item.get("emailAddress", "")))
            rec.reason = "feedback"
            rec.feedback_type = str(complaint.get("complaintFeedbackType", "") or "")
            rec.date = str(complaint.get("timestamp", ""))
            rec.diagnosis = '{{"feedbackid":"{}", "useragent":"{}"}}'.format(
                complaint.get("feedbackId", ""),
                complaint.get("userAgent", ""),
            )
    elif kind == "Delivery":
        delivery = data.get("delivery") or {}
        for addr in delivery.get("recipients") or []:
            rec = recs.add(str(addr))
            rec.reason = rec.action = "delivered"
            rec.date = str(delivery.get("timestamp", ""))
            rec.lhost = str(delivery.get("reportingMTA", ""))
            rec.diagnosis = str(delivery.get("smtpResponse", ""))
            rec.status = codes.find_status(rec.diagnosis, "2")
            rec.reply_code = codes.find_reply(rec.diagnosis, "2")
    if not recs.count:
        return None
    mail = data.get("mail") or {}
    rfc822 = "".join(
        "{}: {}\n".format(h.get("name", ""), h.get("value", ""))
        for h in mail.get("headers") or []
        if isinstance(h, dict)
    )
    common = mail.get("commonHeaders") or {}
    if common.get("date"):
        rfc822 += "Date: {}\n".format(common["date"])
    if common.get("subject"):
        rfc822 += "Subject: {}\n".format(common["subject"])
    return Rising(records=recs.items, rfc822=rfc822)
