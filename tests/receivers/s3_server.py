#!/usr/bin/env python3
"""A real S3 API on loopback for the upload tests (tests/s3_upload.rs): moto's
server with authentication on from the first request, so every request must
carry a valid AWS Signature V4 of a known access key (a wrong secret gets
403 SignatureDoesNotMatch, an unknown key 403 InvalidAccessKeyId).

    s3_server.py serve --port P --access-key AKIA... --secret S --bucket B
        IAM user "sipbridge" with exactly that key and an s3:* policy, then the
        bucket created with a signed CreateBucket (boto3); prints READY and
        serves until SIGTERM. The state is in memory: a restart starts empty
        (the test's "server lost everything" case) and creates the bucket again.

    s3_server.py objects --endpoint URL --access-key ... --secret ... --bucket B
        Every object of the bucket, downloaded with signed GetObject requests,
        as JSON {key: {"size": n, "sha256": hex}} on stdout.
"""

import argparse
import hashlib
import json
import os
import signal
import sys
import threading

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


def serve(args):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iam.models import iam_backends
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    iam.create_user("us-east-1", "sipbridge")
    key = iam.create_access_key("sipbridge")
    key.access_key_id = args.access_key
    key.secret_access_key = args.secret
    iam.put_user_policy("sipbridge", "s3", POLICY)
    client(f"http://127.0.0.1:{args.port}", args.access_key, args.secret).create_bucket(Bucket=args.bucket)
    print("READY", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop()


def objects(args):
    s3 = client(args.endpoint, args.access_key, args.secret)
    out = {}
    for o in s3.list_objects_v2(Bucket=args.bucket).get("Contents", []):
        body = s3.get_object(Bucket=args.bucket, Key=o["Key"])["Body"].read()
        out[o["Key"]] = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    json.dump(out, sys.stdout)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["serve", "objects"])
    p.add_argument("--port", type=int)
    p.add_argument("--endpoint")
    p.add_argument("--access-key", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--bucket", required=True)
    args = p.parse_args()
    serve(args) if args.command == "serve" else objects(args)


if __name__ == "__main__":
    main()
