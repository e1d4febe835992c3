"""`kvserve-serve`: load an artifact, serve it over gRPC, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import sys

from export.manifest import ManifestError
from server import logs
from server.app import Server, load_model
from server.config import ServeConfig, parse_args
from server.security import SecurityError, ServerSecurity, load_security

log = logging.getLogger("kvserve.server")


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    logs.setup(config.log_level, config.log_format)
    try:
        security = load_security(config)  # before the model: a typo in a flag fails fast
        model = load_model(config)
    except (ManifestError, SecurityError) as e:
        print(f"kvserve-serve: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(config, model, security))
    except OSError as e:
        print(f"kvserve-serve: {e}", file=sys.stderr)
        return 2
    return 0


async def _serve(config: ServeConfig, model, security: ServerSecurity) -> None:
    server = Server(config, model, security)
    metrics_http = None
    if config.metrics_port >= 0:
        metrics_http = server.metrics.serve(
            config.metrics_host, config.metrics_port, config.metrics_path
        )
    port = await server.start()
    log.info(
        "serving %s (%s, %s) on %s:%d; metrics on %s:%d%s",
        model.manifest.model_name,
        model.manifest.quantization,
        model.runner.provider,
        config.host,
        port,
        config.metrics_host,
        config.metrics_port,
        config.metrics_path,
    )
    log.info("security: %s", security.summary)
    print(f"kvserve-serve: listening on {config.host}:{port}", flush=True)
    if server.http is not None:
        scheme = "https" if server.http.tls else "http"
        url = f"{scheme}://{config.host}:{server.http_port}"
        log.info("OpenAI-compatible API on %s/v1, playground on %s/", url, url)
        print(f"kvserve-serve: listening on {url} (OpenAI API, playground)", flush=True)
    try:
        await server.run_until_signalled()
    finally:
        if metrics_http is not None:
            metrics_http.shutdown()


if __name__ == "__main__":
    sys.exit(main())
