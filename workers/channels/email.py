"""E-mail over SMTP: the relay for patients' mailboxes and the MSSanté relay for laboratories'.

`Mailer` speaks to one relay (STARTTLS, implicit TLS or plain; login when credentials are set; a
client certificate for the mutual TLS MSSanté asks for) and sorts failures: the relay refusing
this message or its recipients for good (5xx) is `Permanent`; a relay that is down, slow,
disconnects, answers 4xx, or refuses our login or certificate (a configuration to fix, after which
the same message goes through) is `Transient`.

`patient_email` writes the one message patients get: a link to the portal and nothing else (no
result, no name, no health data), since a mailbox is often shared or read over a shoulder.
"""

from __future__ import annotations

import hashlib
import re
import smtplib
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from workers.channels import Permanent, Transient

SECURITIES = ("starttls", "tls", "none")
SESSION_CODES = frozenset({530, 534, 535, 538})
# RFC 5322 dot-atom-text: what the left part of a Message-ID may be without quoting
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")

PATIENT_SUBJECT = "SI-DEP : un document vous attend / a document is waiting for you"
PATIENT_BODY = """\
Bonjour,

Un nouveau document vous attend sur le portail SI-DEP. Pour le consulter, ouvrez ce lien
personnel :

{link}

Votre date de naissance vous sera demandée, puis un code à usage unique vous sera envoyé pour
vérifier qu'il s'agit bien de vous. Ne transmettez ce lien à personne.

Ce message est envoyé automatiquement, merci de ne pas y répondre.

-----

Hello,

A new document is waiting for you on the SI-DEP portal. To view it, open this personal link:

{link}

You will be asked for your date of birth, then a one-time code will be sent to you to check that
it is you. Do not share this link with anyone.

This message was sent automatically, please do not reply.
"""


class Mailer:
    def __init__(
        self,
        host: str,
        port: int,
        security: str = "starttls",
        user: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        cert_file: str | None = None,
        key_file: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ):
        if security not in SECURITIES:
            raise ValueError(f"SMTP security {security!r} is not one of {', '.join(SECURITIES)}")
        self.host = host
        self.port = int(port)
        self.security = security
        self.user = user
        self.password = password
        self.timeout = timeout
        # the server's certificate is checked against the system's store (or the context given,
        # in tests); a client certificate is loaded now, so a missing file stops the start
        self.ssl_context = ssl_context or ssl.create_default_context()
        if cert_file:
            self.ssl_context.load_cert_chain(cert_file, key_file)

    def send(self, message: EmailMessage) -> None:
        """Hand `message` to the relay (envelope from its From, to its To/Cc/Bcc)."""
        try:
            smtp = self._session()
            try:
                refused = smtp.send_message(message)
            finally:
                _close(smtp)
        except smtplib.SMTPRecipientsRefused as error:
            raise _refused(error.recipients) from None
        except smtplib.SMTPAuthenticationError as error:
            raise Transient(f"relais SMTP : authentification refusée ({error.smtp_code})") from None
        except (smtplib.SMTPConnectError, smtplib.SMTPHeloError) as error:
            raise Transient(f"relais SMTP : connexion refusée ({error.smtp_code})") from None
        except smtplib.SMTPResponseException as error:
            kind = Permanent if _refuses_message(error.smtp_code) else Transient
            raise kind(f"relais SMTP : message refusé ({error.smtp_code})") from None
        except smtplib.SMTPServerDisconnected:
            raise Transient("relais SMTP : connexion interrompue") from None
        except smtplib.SMTPNotSupportedError:
            raise Transient("relais SMTP : STARTTLS ou AUTH non proposé") from None
        except smtplib.SMTPException as error:
            raise Transient(f"relais SMTP : {type(error).__name__}") from None
        except ssl.SSLError as error:
            raise Transient(f"relais SMTP : TLS ({error.reason or type(error).__name__})") from None
        except TimeoutError:
            raise Transient("relais SMTP : délai dépassé") from None
        except OSError as error:
            raise Transient(f"relais SMTP : injoignable ({type(error).__name__})") from None
        if refused:
            # some recipients got it: a retry would send it to them again
            raise Permanent(f"relais SMTP : {len(refused)} destinataire(s) refusé(s) sur {_count(message)}")

    def _session(self) -> smtplib.SMTP:
        if self.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self.ssl_context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.security == "starttls":
                smtp.starttls(context=self.ssl_context)
            if self.user:
                smtp.login(self.user, self.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    @classmethod
    def from_settings(cls, settings) -> Mailer | None:
        """The patients' relay (SMTP_*), None when SMTP_HOST is unset."""
        if not settings.smtp_host:
            return None
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_security,
            settings.smtp_user,
            settings.smtp_password,
            settings.smtp_timeout,
        )

    @classmethod
    def from_mssante(cls, settings) -> Mailer | None:
        """The MSSanté relay (MSSANTE_SMTP_*, else SMTP_*), None when neither host is set."""
        relay = settings.mssante_smtp
        if not relay["host"]:
            return None
        return cls(**relay)


def _close(smtp: smtplib.SMTP) -> None:
    """QUIT, but a relay that answers it badly after taking the message has still taken it."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _refuses_message(code: int) -> bool:
    """A 5xx about this message, not about our session: 530 (authentication or STARTTLS
    required), 534, 535 and 538 (mechanism or encryption) say the relay is set up otherwise than
    we are, and the same message goes through once that is fixed."""
    return code >= 500 and code not in SESSION_CODES


def _refused(recipients: dict) -> Transient | Permanent:
    codes = sorted({code for code, _ in recipients.values()})
    kind = Permanent if all(_refuses_message(code) for code in codes) else Transient
    return kind(f"relais SMTP : destinataire refusé ({', '.join(str(code) for code in codes)})")


def _count(message: EmailMessage) -> int:
    return sum(len(message.get_all(field, [])) for field in ("To", "Cc", "Bcc"))


def message_id(key: str, sender: str) -> str:
    """`<key@domain of sender>`: the same key gives the same Message-ID, so a message resent after
    a lost answer is recognisable as the same one. A key that cannot stand unquoted in a
    Message-ID is replaced by its digest."""
    domain = parseaddr(sender)[1].rpartition("@")[2]
    if not domain:
        raise ValueError("the sender has no domain for a Message-ID")
    left = key if _DOT_ATOM.fullmatch(key) else hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"<{left}@{domain}>"


def plain_email(sender: str, to: str, subject: str, body: str, message_id: str) -> EmailMessage:
    """A plain-text message of the platform to one person, dated now, under a stable Message-ID."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id
    message.set_content(body)
    return message


def patient_email(sender: str, to: str, link: str, message_id: str) -> EmailMessage:
    """The message telling a patient a document waits on the portal, French then English."""
    message = plain_email(sender, to, PATIENT_SUBJECT, PATIENT_BODY.format(link=link), message_id)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-reply, no vacation notice
    message["Content-Language"] = "fr, en"
    return message
