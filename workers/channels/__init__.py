"""The ways a message leaves the platform: SMS through an HTTP gateway, e-mail over SMTP (patients'
mailboxes and laboratories' MSSanté mailboxes). Each channel raises `Permanent` when retrying
cannot help (the address is refused, the message is too large) and `Transient` when it may
(timeouts, 5xx, a relay that is down); the delivery job decides what to do with either."""


class DeliveryError(Exception):
    """A send that did not go through; `reason` is what operators and the Communication show
    (never an address, a name or a token)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Permanent(DeliveryError):
    """Retrying will not help."""


class Transient(DeliveryError):
    """Retrying later may help."""
