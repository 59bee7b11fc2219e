"""One email delivery attempt over SMTP, classified as delivered, retryable or permanent.

smtplib is synchronous; it runs in a worker thread so the event loop never blocks on a slow relay.
A 4xx answer or a broken connection is retryable; a 5xx refusal of the recipient or the message is
permanent (the delivery stays visible as failed, for a person to look at).
"""

from __future__ import annotations

import asyncio
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage

from connectors.webhook.sender import DeliveryResult, Outcome


@dataclass(frozen=True)
class EmailTarget:
    name: str
    address: str
    smtp_host: str
    smtp_port: int = 25
    sender: str = "liandong@localhost"


class EmailSender:
    def __init__(self, timeout_s: float = 10.0) -> None:
        self._timeout_s = timeout_s

    async def deliver(self, target: EmailTarget, delivery_id: str, subject: str, text: str) -> DeliveryResult:
        message = EmailMessage()
        message["From"] = target.sender
        message["To"] = target.address
        message["Subject"] = subject
        # Receivers deduplicate on it across retries, like the webhook delivery header.
        message["X-Liandong-Delivery"] = delivery_id
        message.set_content(text)
        try:
            await asyncio.to_thread(self._send, target, message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            return _classify(min(codes) if codes else 550, "recipient_refused", str(exc.recipients))
        except smtplib.SMTPResponseException as exc:
            return _classify(exc.smtp_code, "smtp_error", str(exc.smtp_error))
        except (OSError, smtplib.SMTPException) as exc:
            return DeliveryResult(Outcome.RETRYABLE, "connection_error", repr(exc)[:256])
        return DeliveryResult(Outcome.DELIVERED, "delivered", "")

    def _send(self, target: EmailTarget, message: EmailMessage) -> None:
        with smtplib.SMTP(target.smtp_host, target.smtp_port, timeout=self._timeout_s) as smtp:
            smtp.send_message(message)


def _classify(code: int, reason: str, detail: str) -> DeliveryResult:
    outcome = Outcome.RETRYABLE if 400 <= code < 500 else Outcome.PERMANENT
    return DeliveryResult(outcome, reason, detail[:256], status_code=code)
