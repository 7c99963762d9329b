"""Flask application factory: loads knowledge and configuration once, wires the endpoints."""

from __future__ import annotations

import dataclasses
import logging

from flask import Flask, Response, g, jsonify
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from cds_service import facts, rule_pages
from cds_service.config import ConfigError, Settings
from cds_service.engine import EngineOptions
from cds_service.governance import web as governance_web
from cds_service.knowledge import DEFAULT_CARDS_DIR, load_knowledge
from cds_service.knowledge.site import SiteConfig, load_site, site_view
from cds_service.protocol import access_log, cors, metrics, openapi
from cds_service.protocol.auth import Authenticator, DatabaseReplayCache, load_trusted_clients
from cds_service.protocol.discovery import SERVICES, load_prefetch_templates
from cds_service.protocol.errors import ProtocolError, Unavailable, operation_outcome
from cds_service.protocol.feedback import FeedbackStore
from cds_service.protocol.response import ResponseContractError
from cds_service.protocol.snooze import Snoozer, state_secret
from cds_service.protocol.views import ServiceState, Unauthorized, blueprint
from cds_service.state import db as state_db
from cds_service.state import migrate

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the service. Raises (refuses to start) on an invalid knowledge base or configuration."""
    settings = settings or Settings.from_env()
    knowledge = load_knowledge(settings.cards_dir, settings.cache_dir)
    if settings.canonical_base:
        # Our extension and code-system URLs are the deployer's to own, not the knowledge base's.
        texts = dataclasses.replace(knowledge.texts, canonical_base=settings.canonical_base)
        knowledge = dataclasses.replace(knowledge, texts=texts)
    # Checked against the knowledge it changes: a wrong id stops the start, naming file and field.
    site = None
    if settings.site_config is not None:
        site = load_site(settings.site_config, knowledge, [s.id for s in SERVICES])
    cards_dir = settings.cards_dir
    if cards_dir is None or not (cards_dir / "prefetch.yaml").is_file():
        cards_dir = DEFAULT_CARDS_DIR
    templates = load_prefetch_templates(cards_dir)
    facts.check_installed()
    if settings.preload_readers:
        # Build the R4B validators and the text pipeline now, so no hook call pays for them.
        facts.warm_up(knowledge.valuesets)
    database = state_db.from_settings(settings)
    try:
        migrate.prepare(database, settings.database_auto_migrate)
    except migrate.SchemaTooOld as exc:
        raise ConfigError(str(exc)) from None
    finally:
        # `serve` builds the app in the gunicorn master and forks: no connection stays open there
        database.dispose()
    authenticator = None
    if settings.trusted_clients is not None:
        _require_public_url(settings)
        authenticator = Authenticator.create(
            load_trusted_clients(settings.trusted_clients), settings.jwt_algorithms, settings.jwt_leeway,
            settings.jwt_max_lifetime, settings.jwks_cache_seconds,
            replay=DatabaseReplayCache(database),
        )
    else:
        log.warning("CDS_TRUSTED_CLIENTS not set: running OPEN, any caller is accepted (development only)")
    if not settings.fhir_allowed_hosts:
        log.warning("CDS_FHIR_ALLOWED_HOSTS not set: no FHIR server will be queried (prefetch only)")

    app = Flask(__name__)
    if settings.trust_proxy_headers:
        # Only the last N hops' X-Forwarded-* are believed: the proxies the operator named.
        n = settings.trust_proxy_headers
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n, x_prefix=n)  # type: ignore[method-assign]
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]  # Flask's default provider has it
    feedback = FeedbackStore(database, settings.feedback_store_comments)
    options = EngineOptions(quiet_appropriate=settings.quiet_appropriate, qcdsm_id=settings.qcdsm_id)
    snoozer = Snoozer(feedback, state_secret(settings.state_secret), settings.snooze_hours * 3600)
    per_service = _per_service(site, options, snoozer)
    app.extensions["cds"] = ServiceState(
        settings=settings,
        knowledge=knowledge,
        templates=templates,
        authenticator=authenticator,
        feedback=feedback,
        engine_options=options,
        # feedback records an override whenever any service snoozes (snoozes hold across services)
        snoozer=max((s for _, s in per_service.values()), key=lambda s: s.window_seconds, default=snoozer),
        site=site,
        engine_knowledge=site_view(knowledge, site),
        service_options={sid: o for sid, (o, _) in per_service.items()},
        snoozers={sid: s for sid, (_, s) in per_service.items()},
    )
    access_log.init_app(app)
    metrics.init_app(app)
    cors.init_app(app, settings.cors_origins)
    app.register_blueprint(blueprint)
    app.register_blueprint(rule_pages.blueprint)
    app.register_blueprint(governance_web.blueprint)
    openapi.init_app(app)
    _error_handlers(app)
    return app


def _per_service(
    site: SiteConfig | None, options: EngineOptions, snoozer: Snoozer
) -> dict[str, tuple[EngineOptions, Snoozer]]:
    """Each service's quiet mode and snooze window: the site file's, else the CDS_* settings'."""
    out = {}
    windows = [snoozer.window_seconds]
    for service in SERVICES:
        local = site.services.get(service.id) if site else None
        quiet = local.quiet if local and local.quiet is not None else options.quiet_appropriate
        hours = local.snooze_hours if local and local.snooze_hours is not None else None
        if hours is not None:
            windows.append(hours * 3600)
        out[service.id] = (
            dataclasses.replace(options, quiet_appropriate=quiet),
            dataclasses.replace(snoozer, window_seconds=hours * 3600) if hours is not None else snoozer,
        )
    for _, service_snoozer in out.values():  # the store is shared: prune only past the longest window
        service_snoozer.keep_seconds = max(windows)
    return out


def _require_public_url(settings: Settings) -> None:
    """The JWT `aud` must be checked against a URL the caller cannot choose (issue 10, point 5).

    Without CDS_PUBLIC_BASE_URL the expected audience would come from the request's Host header,
    so a token minted for any host would be accepted when sent with that Host.
    """
    if settings.public_base_url is None and not settings.trust_proxy_headers:
        raise ConfigError(
            "CDS_TRUSTED_CLIENTS is set but CDS_PUBLIC_BASE_URL is not: set CDS_PUBLIC_BASE_URL to the "
            "service's public root (e.g. https://cds.example.org), the URL CDS Clients put in the JWT "
            "`aud`, or set CDS_TRUST_PROXY_HEADERS to the number of reverse proxies in front of the "
            "service whose X-Forwarded-* headers may be trusted"
        )


def _error_handlers(app: Flask) -> None:
    def outcome(status: int, message: str) -> Response:
        access_log.note(error=message[:200])
        response = jsonify(operation_outcome(status, message))
        response.status_code = status
        return response

    @app.errorhandler(Unauthorized)
    def _unauthorized(_: Unauthorized) -> Response:
        # Bare 401: no hint for a caller probing the service.
        return Response(status=401)

    @app.errorhandler(ProtocolError)
    def _protocol(exc: ProtocolError) -> Response:
        response = outcome(exc.status, exc.message)
        if isinstance(exc, Unavailable):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        messages = {
            404: "Not found; the CDS Services are listed at GET /cds-services",
            405: "Method not allowed",
            413: "Request body too large",
        }
        status = exc.code or 500
        response = outcome(status, messages.get(status, exc.description or exc.name))
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if isinstance(exc, ResponseContractError) and app.extensions["cds"].settings.strict_responses:
            raise exc  # strict mode (tests): a contract violation must fail loudly
        # A bug: full detail goes to the log (with hookInstance), none to the client.
        log.exception("unhandled error (hookInstance=%s)", g.get("log", {}).get("hookInstance"))
        return outcome(500, "Internal error; the failure was logged")
