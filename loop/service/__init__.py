"""``alloop serve``: the loop as an HTTP service.

- :mod:`loop.service.core` -- ``LoopService``: webhook ingestion, the poller, the one iteration
  worker under the database lease, the nightly schedule;
- :mod:`loop.service.app` -- ``create_app(service)``: the FastAPI application (webhook, read and
  write API, the ML backend under ``/ml``);
- :mod:`loop.service.status` -- the status computations shared with ``alloop status``;
- :mod:`loop.service.server` -- uvicorn in a background thread.

Importing this package does nothing; the submodules import FastAPI and APScheduler.
"""
