"""SMS through an HTTP gateway.

The protocol (the one `fhir_server.outlets.start_sms_gateway` serves locally): POST a JSON object
`{"from": sender, "to": E.164 number, "text": text}` to the gateway's URL with an
`Idempotency-Key` header, HTTP basic auth when credentials are set. A 2xx answer accepted the
message (its JSON `id` is the gateway's message id); a repeated key is answered as the first
send was, so a send retried after a timeout does not reach the patient twice.
"""

from __future__ import annotations

import re

import requests

from workers.channels import Permanent, Transient
from workers.channels.gsm7 import check_template

# Deep links are the portal's URL, `#` and a token of this many characters (16 random bytes in
# base64url): the template is checked with a link this long.
TOKEN_LENGTH = 22
# Statuses after which the same request may succeed later (RFC 9110, RFC 8470, RFC 6585).
RETRYABLE_STATUSES = frozenset({408, 425, 429})
_SENDER = re.compile(r"[A-Za-z0-9 ]{1,11}")
_LETTER = re.compile(r"[A-Za-z]")


def check_sender(sender: str) -> None:
    """An alphanumeric sender id: 1-11 ASCII letters, digits or spaces, at least one letter (all
    digits would be taken for a phone number, which it is not)."""
    if not _SENDER.fullmatch(sender or "") or not _LETTER.search(sender):
        raise ValueError(f"SMS sender id {sender!r} is not 1-11 letters, digits or spaces with at least one letter")


def longest_link(portal: str) -> str:
    """A deep link as long as the platform makes them, to check the template with."""
    return f"{portal}#{'x' * TOKEN_LENGTH}"


class SmsGateway:
    def __init__(self, url: str, user=None, password=None, sender: str = "SIDEP", timeout: float = 10.0):
        check_sender(sender)
        self.url = url
        self.auth = (user, password or "") if user else None
        self.sender = sender
        self.timeout = timeout

    def send(self, to: str, text: str, key: str) -> str:
        """Hand `text` to the gateway for `to`; the gateway's message id. `key` identifies this
        notification: the same key sent again is the same message to the gateway."""
        payload = {"from": self.sender, "to": to, "text": text}
        try:
            response = requests.post(
                self.url,
                json=payload,
                headers={"Idempotency-Key": key},
                auth=self.auth,
                timeout=self.timeout,
                allow_redirects=False,  # a gateway that moved is a configuration to fix, not a place to resend
            )
        except requests.Timeout:
            raise Transient("passerelle SMS : délai dépassé") from None
        except requests.ConnectionError:
            raise Transient("passerelle SMS : injoignable") from None
        except requests.RequestException as error:
            raise Transient(f"passerelle SMS : {type(error).__name__}") from None
        return self._accepted(response, key)

    @staticmethod
    def _accepted(response: requests.Response, key: str) -> str:
        status = response.status_code
        if 200 <= status < 300:
            try:
                message_id = response.json().get("id")
            except (ValueError, AttributeError):
                message_id = None
            return str(message_id) if message_id else key
        reason = f"passerelle SMS : HTTP {status}"
        if status in RETRYABLE_STATUSES or status >= 500:
            raise Transient(reason)
        raise Permanent(reason)

    @classmethod
    def from_settings(cls, settings) -> SmsGateway | None:
        return from_settings(settings)


def from_settings(settings) -> SmsGateway | None:
    """The configured gateway, None when SMS_GATEWAY_URL is unset. The template is checked here,
    so a notification that would not fit one SMS stops the worker at start, not at each send."""
    if not settings.sms_gateway_url:
        return None
    check_template(settings.sms_template, longest_link(settings.portal))
    return SmsGateway(
        settings.sms_gateway_url,
        settings.sms_gateway_user,
        settings.sms_gateway_password,
        settings.sms_sender,
        settings.sms_timeout,
    )
