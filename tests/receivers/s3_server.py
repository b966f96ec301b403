#!/usr/bin/env python3
"""A real S3 API on loopback for the upload tests (tests/s3_upload.rs,
tests/s3_calls.rs): moto's server with authentication on from the first request,
so every request must carry a valid AWS Signature V4 of a known access key (a
wrong secret gets 403 SignatureDoesNotMatch, an unknown key 403
InvalidAccessKeyId).

moto checks signatures in the Authorization header only: a presigned GET (SigV4
in the query string, as in call.recording.uploaded's recording_urls) makes it
fail with a 500. A WSGI layer in front of it (PresignedGet) checks such a GET the
way S3 does, with botocore's own query signer, and answers 403 when it fails.

    s3_server.py serve --port P --access-key AKIA... --secret S --bucket B
        IAM user "sipbridge" with exactly that key and an s3:* policy, then the
        bucket created with a signed CreateBucket (boto3); prints READY and
        serves until SIGTERM. The state is in memory: a restart starts empty
        (the test's "server lost everything" case) and creates the bucket again.
        SIGTERM ends the process at once (in-flight requests are cut, as when a
        server dies): it is blocked in every thread and taken with sigwait by
        the main thread, because CPython runs a Python signal handler only in
        the main thread, and a SIGTERM delivered to a server thread would wait
        for a main thread that is asleep.

        --hold-parts SUFFIX:N  an UploadPart of an object whose key ends in
        SUFFIX, numbered above N, gets no answer (for at most 120 s, then 503
        SlowDown): the test stops the server with that upload surely in the
        middle, whatever the machine's load.

    s3_server.py objects --endpoint URL --access-key ... --secret ... --bucket B
        Every object of the bucket, downloaded with signed GetObject requests,
        as JSON {key: {"size": n, "sha256": hex, "content_type": ...}} on stdout.
"""

import argparse
import datetime
import hashlib
import hmac
import json
import os
import signal
import sys
import threading
import time
from urllib.parse import quote, unquote

# Before moto is imported: authentication from the first request on.
os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

POLICY = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
)


def client(endpoint, access_key, secret):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1}),
    )


def query_pairs(environ):
    """The request's query string as (name, value) pairs, still percent-encoded."""
    return [p.partition("=")[::2] for p in environ.get("QUERY_STRING", "").split("&") if p]


class PresignedGet:
    """WSGI layer in front of moto for GET/HEAD requests signed in the query
    string (presigned URLs), which moto's authentication does not read.

    The URL is checked as S3 checks it (AWS "Authenticating Requests: Using Query
    Parameters"): algorithm AWS4-HMAC-SHA256; credential scope of the served key,
    dated the day of X-Amz-Date, service s3; X-Amz-Expires of 1 s to 7 days, not
    past; and X-Amz-Signature equal to the one botocore's S3SigV4QueryAuth
    computes with the served secret over the canonical request (the path and
    query decoded and encoded again the AWS way, the signed headers as received,
    UNSIGNED-PAYLOAD). A failed check is S3's 403 XML error. A passed one goes on
    to moto as the same request signed in its Authorization header with the same
    key (botocore's S3SigV4Auth), so moto still applies the key's policy and
    serves the object itself. Every other request goes to moto untouched.
    """

    def __init__(self, app, access_key, secret):
        self.app = app
        self.access_key = access_key
        self.secret = secret

    def __call__(self, environ, start_response):
        pairs = query_pairs(environ)
        if not any(k == "X-Amz-Signature" for k, _ in pairs):
            return self.app(environ, start_response)
        method = environ["REQUEST_METHOD"]
        raw_path = (environ.get("RAW_URI") or environ.get("REQUEST_URI") or quote(environ["PATH_INFO"])).split("?")[0]
        failure, region = self.check(environ, method, raw_path, pairs)
        if failure:
            code, message = failure
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
            ).encode()
            start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
            return [body] if method != "HEAD" else []
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        host = environ["HTTP_HOST"]
        forward = AWSRequest(method=method, url=f"http://{host}{raw_path}", headers={"host": host})
        S3SigV4Auth(Credentials(self.access_key, self.secret), "s3", region).add_auth(forward)
        environ["HTTP_AUTHORIZATION"] = forward.headers["Authorization"]
        environ["HTTP_X_AMZ_DATE"] = forward.headers["X-Amz-Date"]
        environ["HTTP_X_AMZ_CONTENT_SHA256"] = forward.headers["X-Amz-Content-SHA256"]
        environ["QUERY_STRING"] = ""
        environ["RAW_URI"] = environ["REQUEST_URI"] = raw_path
        return self.app(environ, start_response)

    def check(self, environ, method, raw_path, pairs):
        """(None, region) when the presigned request is valid, else ((code, message), None)."""
        from botocore.auth import S3SigV4QueryAuth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        params = {unquote(k): unquote(v) for k, v in pairs}
        if method not in ("GET", "HEAD"):
            return ("AccessDenied", f"presigned {method} is not served here"), None
        if params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
            return ("AuthorizationQueryParametersError", "X-Amz-Algorithm must be AWS4-HMAC-SHA256"), None
        scope = params.get("X-Amz-Credential", "").split("/")
        amz_date = params.get("X-Amz-Date", "")
        if len(scope) != 5 or scope[3] != "s3" or scope[4] != "aws4_request" or scope[1] != amz_date[:8]:
            return ("AuthorizationQueryParametersError", f"bad credential scope {'/'.join(scope)}"), None
        if scope[0] != self.access_key:
            return ("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."), None
        try:
            signed_at = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
            expires = int(params.get("X-Amz-Expires", ""))
        except ValueError:
            return ("AuthorizationQueryParametersError", "X-Amz-Date or X-Amz-Expires unreadable"), None
        if not 1 <= expires <= 604800:
            return ("AuthorizationQueryParametersError", "X-Amz-Expires must be 1 to 604800 seconds"), None
        now = datetime.datetime.now(datetime.timezone.utc)
        if now > signed_at + datetime.timedelta(seconds=expires):
            return ("AccessDenied", "Request has expired"), None
        if signed_at > now + datetime.timedelta(minutes=15):
            return ("AccessDenied", "Request is not valid yet"), None
        names = params.get("X-Amz-SignedHeaders", "").split(";")
        if "host" not in names:
            return ("AuthorizationQueryParametersError", "the host header must be signed"), None
        headers = {}
        for name in names:
            value = environ.get("HTTP_" + name.upper().replace("-", "_"))
            if value is None:
                return ("AccessDenied", f"signed header {name} missing"), None
            headers[name] = value
        request = AWSRequest(
            method=method,
            url=f"http://{headers['host']}" + quote(unquote(raw_path), safe="/-_.~"),
            headers=headers,
            params=[(k, v) for k, v in params.items() if k != "X-Amz-Signature"],
        )
        request.context["timestamp"] = amz_date
        auth = S3SigV4QueryAuth(Credentials(self.access_key, self.secret), "s3", scope[2], expires=expires)
        string_to_sign = auth.string_to_sign(request, auth.canonical_request(request))
        if not hmac.compare_digest(auth.signature(string_to_sign, request), params["X-Amz-Signature"]):
            return (
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            ), None
        return None, scope[2]


class HoldParts:
    """WSGI layer: UploadPart requests of the held key above part N wait for
    the process to end (at most HOLD_SECONDS, then S3's 503 SlowDown)."""

    HOLD_SECONDS = 120

    def __init__(self, app, spec):
        self.app = app
        self.suffix, _, after = spec.rpartition(":")
        self.after = int(after)

    def __call__(self, environ, start_response):
        params = dict(query_pairs(environ))
        part = params.get("partNumber", "")
        held = (
            environ["REQUEST_METHOD"] == "PUT"
            and environ["PATH_INFO"].endswith(self.suffix)
            and part.isdigit()
            and int(part) > self.after
        )
        if not held:
            return self.app(environ, start_response)
        print(f"holding {environ['PATH_INFO']} part {part}", file=sys.stderr, flush=True)
        time.sleep(self.HOLD_SECONDS)
        body = b"<Error><Code>SlowDown</Code><Message>held by the test server</Message></Error>"
        start_response("503 Service Unavailable", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
        return [body]


def serve(args):
    # Before any thread starts (threads inherit the mask): SIGTERM stays pending
    # until the sigwait below, whichever thread the kernel picks.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iam.models import iam_backends
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    # What moto's ThreadedMotoServer does, with PresignedGet in front.
    app = PresignedGet(DomainDispatcherApplication(create_backend_app), args.access_key, args.secret)
    if args.hold_parts:
        app = HoldParts(app, args.hold_parts)
    server = make_server("127.0.0.1", args.port, app, threaded=True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    iam.create_user("us-east-1", "sipbridge")
    key = iam.create_access_key("sipbridge")
    key.access_key_id = args.access_key
    key.secret_access_key = args.secret
    iam.put_user_policy("sipbridge", "s3", POLICY)
    client(f"http://127.0.0.1:{args.port}", args.access_key, args.secret).create_bucket(Bucket=args.bucket)
    print("READY", flush=True)
    signal.sigwait({signal.SIGTERM})
    sys.stderr.flush()
    os._exit(0)


def objects(args):
    s3 = client(args.endpoint, args.access_key, args.secret)
    out = {}
    for o in s3.list_objects_v2(Bucket=args.bucket).get("Contents", []):
        got = s3.get_object(Bucket=args.bucket, Key=o["Key"])
        body = got["Body"].read()
        out[o["Key"]] = {
            "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "content_type": got.get("ContentType"),
        }
    json.dump(out, sys.stdout)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["serve", "objects"])
    p.add_argument("--port", type=int)
    p.add_argument("--endpoint")
    p.add_argument("--access-key", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--hold-parts", metavar="SUFFIX:N")
    args = p.parse_args()
    serve(args) if args.command == "serve" else objects(args)


if __name__ == "__main__":
    main()
