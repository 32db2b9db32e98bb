"""What a replica serves while it waits for the Lease: a liveness endpoint saying it is alive, not leading.

kopf's own health endpoint starts with the operator, which a standby does not run yet;
without this the kubelet would restart standbys for failing their liveness probe.
"""

from __future__ import annotations

from aiohttp import web


async def serve(port: int) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"leader": False})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
