"""`kvserve-serve`: load an artifact, serve it over gRPC, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import sys

from export.manifest import ManifestError
from server.app import Server, load_model
from server.config import ServeConfig, parse_args

log = logging.getLogger("kvserve.server")


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        model = load_model(config)
    except ManifestError as e:
        print(f"kvserve-serve: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(config, model))
    except OSError as e:
        print(f"kvserve-serve: {e}", file=sys.stderr)
        return 2
    return 0


async def _serve(config: ServeConfig, model) -> None:
    server = Server(config, model)
    metrics_http = None
    if config.metrics_port >= 0:
        metrics_http = server.metrics.serve(config.metrics_host, config.metrics_port)
    port = await server.start()
    log.info(
        "serving %s (%s, %s) on %s:%d; metrics on %s:%d",
        model.manifest.model_name,
        model.manifest.quantization,
        model.runner.provider,
        config.host,
        port,
        config.metrics_host,
        config.metrics_port,
    )
    print(f"kvserve-serve: listening on {config.host}:{port}", flush=True)
    try:
        await server.run_until_signalled()
    finally:
        if metrics_http is not None:
            metrics_http.shutdown()


if __name__ == "__main__":
    sys.exit(main())
