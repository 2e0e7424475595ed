"""`loramux serve --replicas N`: loramux as a Ray Serve application.

The `Ingress` holds the clients' connections. It reads each request's `model`, resolves it to
the adapter version it names now, and hands the request to a `Replica` through Ray Serve's
multiplexing with that version as the model id: Ray's router sends it to a replica that
already holds the version (or, when none does, to the one holding fewest), and base requests
spread over all. Each `Replica` is the single-process server (`create_app` over its own
engine) whose quotas live in the cluster's one `ClusterBook`; it resolves the name itself, so
a request runs the version its replica resolved, and alias moves reach every replica within
`--refresh-s`. A replica that dies before it answered has the request retried on another.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
import uuid

from ray import serve
from rich.console import Console
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from starlette.requests import Request
from starlette.responses import Response

from loramux.adapters.errors import LoramuxError

from .asgi_call import HttpCall, asgi_call
from .cluster_book import PUSH_S, ClusterBook, SharedQuotas
from .context import ADMISSION_KEY
from .middleware import ROUTING_KEY
from .metrics import merge_replicas
from .openai_protocol import error_body
from .settings import ServerSettings

log = logging.getLogger("loramux.server")
APP = "loramux"
BOOK = "loramux-book"  # the ClusterBook actor's name in the Ray namespace
REPLICA_HEADER = "x-loramux-replica"
ATTEMPTS_HEADER = "x-loramux-attempts"  # on an answer that needed more than one replica: how many it took
ATTEMPTS = 3  # a request goes to at most this many replicas, while none has answered
_GONE = (ActorDiedError, ActorUnavailableError, RayActorError)


def model_id(body: bytes, base_name: str, route, routing_key: str | None) -> str:
    """The multiplexed model id for a request body: the adapter version its `model` names now
    ("" for the base, so base requests go anywhere); the name itself where `route` cannot tell
    (a merge, a name served from a folder, a name that does not resolve: the replica answers)."""
    try:
        model = json.loads(body).get("model")
    except (ValueError, AttributeError):
        return ""
    if not isinstance(model, str) or model == base_name:
        return ""
    if route is None or "+" in model:
        return model
    try:
        return route(model).pick(routing_key).version
    except LoramuxError:
        return model


def _replica_deployment(settings: ServerSettings):
    """The engine replica, with Ray's per-replica LRU of model ids as large as the catalog's."""

    class Replica:
        async def __init__(self, settings: ServerSettings, book) -> None:
            from .app import create_app
            from .engine_factory import start_vllm_engine

            self.name = serve.get_replica_context().replica_tag
            self.app = create_app(settings, start_vllm_engine, quotas=lambda on_reject: SharedQuotas(book, on_reject))
            self._lifespan = self.app.router.lifespan_context(self.app)
            await self._lifespan.__aenter__()
            self._book = book
            self._pushing = asyncio.create_task(self._push_metrics())

        @serve.multiplexed(max_num_models_per_replica=settings.capacity)
        async def hold(self, model_id: str) -> str:
            """Ray's record that this replica holds `model_id`; the catalog loads it on use."""
            return model_id

        async def handle(self, call: HttpCall):
            if model := serve.get_multiplexed_model_id():
                await self.hold(model)
            async for message in asgi_call(self.app, call, [(REPLICA_HEADER.encode(), self.name.encode())]):
                yield message

        async def _push_metrics(self) -> None:
            """This replica's /metrics (its engine's health asked, as a scrape would) to the book."""
            while True:
                try:
                    body = [m.get("body", b"") async for m in asgi_call(self.app, HttpCall("GET", "/metrics"))]
                    await self._book.report.remote(self.name, b"".join(body))
                except Exception:  # the next push tries again; metrics never take a replica down
                    log.warning("metrics push failed", exc_info=True)
                await asyncio.sleep(PUSH_S)

        async def check_health(self) -> None:
            """Ray restarts a replica whose engine stopped answering."""
            await self.app.state.engine.check_health()

        async def __del__(self) -> None:
            self._pushing.cancel()
            await self._lifespan.__aexit__(None, None, None)

    return serve.deployment(Replica, name="Replica",
                            # one engine batch each; beyond it Ray's router spills a hot adapter to another replica
                            max_ongoing_requests=settings.max_num_seqs or 128,
                            health_check_period_s=10, health_check_timeout_s=30)


class _Relayed(Response):
    """A replica's answer relayed message by message (the first, the response start, is in hand)."""

    def __init__(self, start: dict, rest) -> None:
        self.start, self.rest, self.background = start, rest, None

    async def __call__(self, scope, receive, send) -> None:
        await send(self.start)
        async for message in self.rest:
            await send(message)


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=10_000)
class Ingress:
    def __init__(self, replicas, book, settings: ServerSettings) -> None:
        from .app import registry_resolver

        self.replicas = replicas
        self.book = book
        self.base_name = settings.base_name
        self.resolver = registry_resolver(settings)

    async def __call__(self, request: Request) -> Response:
        if request.url.path == "/metrics":
            texts = await self.book.metrics.remote()
            return Response(merge_replicas(texts), media_type="text/plain; version=0.0.4; charset=utf-8")
        body = await request.body()
        route = self.resolver.route if self.resolver is not None else None
        key = request.headers.get(ROUTING_KEY.decode())
        model = await asyncio.to_thread(model_id, body, self.base_name, route, key) if body else ""
        admission = uuid.uuid4().hex
        call = HttpCall(request.method, request.url.path, request.url.query.encode(), list(request.headers.raw),
                        body, (request.client.host, request.client.port) if request.client else None,
                        {ADMISSION_KEY: admission})
        for attempt in range(ATTEMPTS):
            answer = self.replicas.options(stream=True, multiplexed_model_id=model).handle.remote(call)
            try:
                start = await answer.__anext__()  # nothing has reached the client yet: safe to retry
            except _GONE as exc:
                self.book.abandon.remote(admission)
                log.warning("replica gone; retrying the request elsewhere",
                            extra={"attempt": attempt + 1, "error": type(exc).__name__})
                continue
            if attempt:
                start = {**start, "headers": [*start["headers"], (ATTEMPTS_HEADER.encode(), str(attempt + 1).encode())]}
            return _Relayed(start, answer)
        body = error_body("No replica could answer; retry later.", "server_error", None, "replica_unavailable")
        return Response(json.dumps(body), status_code=503, media_type="application/json",
                        headers={"retry-after": "1"})


def build(settings: ServerSettings, book, gpus: float = 0):
    """The bound application: the ingress over `settings.replicas` engine replicas, each on
    `gpus` GPUs (none: one CPU)."""
    resources = {"num_cpus": 1, "num_gpus": gpus}
    replica = _replica_deployment(settings).options(num_replicas=settings.replicas, ray_actor_options=resources)
    return Ingress.bind(replica.bind(settings, book), book, settings)


# Ray's defaults for a local Ray, where ours differ (a user's environment still wins):
# - its workers run at nice 15, so the raylet stays responsive; ours are the server's engines, and on
#   a machine with other work they starved (a CI run: the replicas took 7 min to start);
# - its controller declares an HTTP proxy dead that is not ready within 5 s of its start or misses a
#   10 s health check (a CI run: the cluster's start failed on 2 cores busy with engines compiling);
# - its router gives a replica 0.1 s to answer how busy it is: the replica holding an adapter lost
#   requests to the other one (which then loaded the adapter cold too) when its loop was a moment late.
RAY_DEFAULTS = {"RAY_worker_niceness": 0,
                "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": 60, "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": 30,
                "RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S": 1.0, "RAY_SERVE_MAX_QUEUE_LENGTH_RESPONSE_DEADLINE_S": 2.0}


def run_on_ray(settings: ServerSettings) -> None:
    """Join RAY_ADDRESS (or start a local Ray), run the application on `--host:--port` until
    interrupted (Ctrl-C or SIGTERM), then take it down: replicas shut their engines."""
    import ray

    os.environ.setdefault("RAY_SERVE_LOG_TO_STDERR", "0")  # Ray's logs stay in its session folder
    for name, value in RAY_DEFAULTS.items():  # a local Ray's raylet and controller inherit them
        os.environ.setdefault(name, str(value))
    # Ray's token auth stays on (its default); its notice that it is on is nothing to act on
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # its progress notes; ours is the line below
    local = not os.environ.get("RAY_ADDRESS")
    ray.init(address=None if local else os.environ["RAY_ADDRESS"], include_dashboard=False,
             num_cpus=max(os.cpu_count() or 1, settings.replicas) if local else None,
             logging_level=logging.WARNING, log_to_driver=settings.log_level == "debug", namespace=APP)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwinds through the finally below
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port,
                                  "keep_alive_timeout_s": int(settings.keep_alive_s)})
        book = ray.remote(ClusterBook).options(name=BOOK, num_cpus=0, get_if_exists=True).remote()
        gpus = 1 if ray.cluster_resources().get("GPU", 0) else 0  # vLLM's CUDA build: a GPU per replica
        serve.run(build(settings, book, gpus), name=APP, route_prefix="/", blocking=False)
        cluster = ("a local Ray (its logs: /tmp/ray/session_latest/logs)" if local
                   else f"the Ray cluster at {os.environ['RAY_ADDRESS']}")
        Console(stderr=True).print(f"serving {settings.base_name} on http://{settings.host}:{settings.port}/v1 from "
                                   f"{settings.replicas} replica(s) on {cluster}", highlight=False)
        while True:
            time.sleep(3600)
    finally:
        serve.delete(APP)  # replicas shut their engines down; then Ray itself, quietly
        ray.shutdown()
