"""GET /metrics: the process's Prometheus metrics (SPEC 6, 7.5), in `patrol run` the
agent's as well. Outside /api/v1, as scrapers expect; `api.door` asks a token only of a
request from elsewhere than loopback."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client.exposition import choose_encoder

from common.metrics import REGISTRY

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, responses={200: {
    "content": {"text/plain": {}}, "description": "Prometheus text format (docs/metrics.md)"}})
def metrics(request: Request) -> Response:
    # a plain def: FastAPI runs it on a worker thread, where the agent's probe reads the
    # buffer's file
    encode, media_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(REGISTRY), media_type=media_type)
