"""The yardstick for POST latency: a bare Tornado handler, in a process of its own.

    python -m bench.bare

It does the least any implementation of ``POST /v1/images/upload`` must do: parse the same JSON body,
take ``urls``, and answer ``202`` with a uuid4 job id and a ``Location``. Prints ``{"port": P}`` once
listening on 127.0.0.1; stops on SIGTERM or when stdin closes.
"""

import asyncio
import json
import uuid

from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from bench.proc import until_stopped


class Upload(web.RequestHandler):
    def post(self) -> None:
        document = json.loads(self.request.body)
        if not isinstance(document, dict) or not isinstance(document.get("urls"), list):
            raise web.HTTPError(400)
        job_id = str(uuid.uuid4())
        self.set_status(202)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Location", "/v1/images/upload/" + job_id)
        self.finish(json.dumps({"jobId": job_id}))


class Health(web.RequestHandler):
    def get(self) -> None:
        self.finish({"status": "ok"})


async def serve() -> None:
    app = web.Application([(r"/v1/images/upload", Upload), (r"/healthz", Health)])
    sockets = bind_sockets(0, "127.0.0.1")
    HTTPServer(app).add_sockets(sockets)
    print(json.dumps({"port": sockets[0].getsockname()[1]}), flush=True)
    await until_stopped()


if __name__ == "__main__":
    asyncio.run(serve())
