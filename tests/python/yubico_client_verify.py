"""Yubico's Python client (PyPI `yubico-client`), unmodified, asking a validator once.

Run by `test_support::val_clients::python_client`. The client does all of the work: it picks
the nonce, signs the request with the client key, sends it, and checks the answer's
signature, OTP and nonce. This script only watches: a subclass records the answer the client
was handed and whether the client's own checks passed, then prints one JSON object per
verification on stdout.

Usage: yubico_client_verify.py URL CLIENT_ID OTP [--timestamp] [--sl N] [--same-nonce-twice]
The client key (base64), if any, comes in YUBICO_CLIENT_KEY: keys stay out of argv.

--same-nonce-twice verifies the OTP twice with one nonce: the client's nonce comes from
os.urandom, which is made to return the same bytes for both calls. That is the one way a
real client repeats a request (a resend of the same query), and the only way to reach
REPLAYED_REQUEST with it.
"""

import json
import os
import sys
from unittest import mock

from yubico_client import yubico
from yubico_client.yubico_exceptions import SignatureVerificationError


class Watched(yubico.Yubico):
    """The client as it is, remembering the last answer it checked."""

    last = None

    def verify_response(self, response, otp, nonce, return_response=False):
        watched = {"raw": response, "signature": "unchecked" if self.key is None else "good"}
        Watched.last = watched
        try:
            return super().verify_response(response, otp, nonce, return_response)
        except SignatureVerificationError:
            watched["signature"] = "bad"
            raise


def status_of(raw):
    """The answer's status, read with the client's own parser."""
    client = yubico.Yubico(0)
    _, query = client.parse_parameters_from_response(raw)
    return client.get_parameters_as_dictionary(query).get("status")


def verify_once(client, otp, timestamp, sl):
    Watched.last = None
    try:
        result = client.verify(otp, timestamp=timestamp, sl=sl, return_response=True)
        verdict = "accepted" if result else "refused"
    except Exception as e:  # the client's verdict, whatever its kind
        verdict = type(e).__name__ + ": " + str(e)
        result = None
    out = {"verdict": verdict}
    if Watched.last is not None:
        out["status"] = status_of(Watched.last["raw"])
        out["signature"] = Watched.last["signature"]
        out["raw"] = Watched.last["raw"]
    if isinstance(result, dict):
        out["fields"] = result
    print(json.dumps(out), flush=True)


def main():
    args = sys.argv[1:]
    url, client_id, otp = args[0], args[1], args[2]
    rest = args[3:]
    timestamp = "--timestamp" in rest
    sl = None
    if "--sl" in rest:
        sl = int(rest[rest.index("--sl") + 1])
    key = os.environ.get("YUBICO_CLIENT_KEY") or None
    client = Watched(client_id, key, api_urls=(url,), max_retries=1)
    if "--same-nonce-twice" in rest:
        fixed = os.urandom(30)
        with mock.patch.object(yubico.os, "urandom", lambda n: fixed[:n]):
            verify_once(client, otp, timestamp, sl)
            verify_once(client, otp, timestamp, sl)
    else:
        verify_once(client, otp, timestamp, sl)


if __name__ == "__main__":
    main()
