#!/usr/bin/python3
"""Sends log records to a Loki push URL with python-logging-loki (a Loki
client independent of orgsplit), for the end-to-end Loki test. Reads one
JSON object on stdin:

  {"url": URL, "records": [{"namespace": NS, "message": TEXT}, ...]}

Each record goes as its own JSON push (the library posts one per record)
with the labels namespace=NS, app=orgsplit-e2e, plus the library's own
severity and logger labels. Prints one line per record: the HTTP status
Loki (here: orgsplit) answered.
"""
import json
import logging
import sys

import logging_loki
import requests

spec = json.load(sys.stdin)
statuses = []

class Recording(logging_loki.LokiHandler):
    def handleError(self, record):
        raise sys.exc_info()[1]

original_post = requests.Session.post

def post(self, url, **kwargs):
    response = original_post(self, url, **kwargs)
    statuses.append(response.status_code)
    return response

requests.Session.post = post

handler = Recording(url=spec["url"], tags={"app": "orgsplit-e2e"}, version="1")
logger = logging.getLogger("e2e")
logger.setLevel(logging.INFO)
logger.addHandler(handler)
for record in spec["records"]:
    try:
        logger.info(record["message"], extra={"tags": {"namespace": record["namespace"]}})
    except ValueError:
        pass  # a non-204 answer; its status is recorded
for status in statuses:
    print(status)
