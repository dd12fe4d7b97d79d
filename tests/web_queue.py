"""Gradio's queue as `dualfocus.serve.web.build_app` sets it up: do concurrent requests overlap?

``python tests/web_queue.py PORT``, run by tests/test_web.py in the web environment
(``DUALFOCUS_WEB_PYTHON``): builds the real page over
a stand-in whose `respond` takes 0.3 s, has NO lock of its own and counts the calls running at
once; sends three requests at the same moment with gradio_client; prints {"most": N, "answers": [...]}.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from gradio_client import Client

from dualfocus.serve import web


class StandIn:
    args = argparse.Namespace(engine="fast", selection="original")
    examples: dict = {}

    def __init__(self):
        self.active = self.most = 0
        self.count = threading.Lock()  # guards the counters only, never the work

    def respond(self, upload, example, question, options, engine, selection):
        with self.count:
            self.active += 1
            self.most = max(self.most, self.active)
        time.sleep(0.3)
        with self.count:
            self.active -= 1
        return f"Answered {question}", "", None, None, "", ""


def main(port: str) -> None:
    stand_in = StandIn()
    app = web.build_app(stand_in)
    _, url, _ = app.launch(server_name="127.0.0.1", server_port=int(port), prevent_thread_lock=True, quiet=True,
                           ssr_mode=False)
    client = Client(url, verbose=False)
    jobs = [client.submit(None, None, f"q{i}", "", "fast", "original", api_name="/ask") for i in range(3)]
    answers = [job.result()[0] for job in jobs]
    app.close()
    print(json.dumps({"most": stand_in.most, "answers": answers}))


if __name__ == "__main__":
    main(*sys.argv[1:])
