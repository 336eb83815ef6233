"""The test's own hands on the S3 server (boto3, from moto's venv): set up
a user with keys and a bucket, then look at and tamper with what the charm
stored. Prints JSON. Usage: s3admin.py ENDPOINT COMMAND [ARGS...]"""

import json
import os
import sys

import boto3
from botocore.config import Config


def client(endpoint, service="s3"):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=os.environ.get("AK", "testing"),
        aws_secret_access_key=os.environ.get("SK", "testing"),
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def main(argv):
    endpoint, cmd, args = argv[0], argv[1], argv[2:]
    if cmd == "setup":
        # Before moto enforces auth: a user whose keys the charm will get.
        iam = client(endpoint, "iam")
        iam.create_user(UserName="etcd")
        key = iam.create_access_key(UserName="etcd")["AccessKey"]
        iam.put_user_policy(
            UserName="etcd",
            PolicyName="all",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            ),
        )
        print(json.dumps({"access": key["AccessKeyId"], "secret": key["SecretAccessKey"]}))
        return 0
    s3 = client(endpoint)
    if cmd == "create-bucket":
        s3.create_bucket(Bucket=args[0])
        print("{}")
    elif cmd == "list":
        out = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=args[0], Prefix=args[1] if len(args) > 1 else ""):
            out += [{"key": o["Key"], "size": o["Size"]} for o in page.get("Contents", [])]
        print(json.dumps(out))
    elif cmd == "uploads":
        got = s3.list_multipart_uploads(Bucket=args[0])
        print(json.dumps([u["Key"] for u in got.get("Uploads", [])]))
    elif cmd == "head":
        got = s3.head_object(Bucket=args[0], Key=args[1])
        print(json.dumps({"size": got["ContentLength"], "metadata": got.get("Metadata", {})}))
    elif cmd == "get":
        s3.download_file(args[0], args[1], args[2])
        print("{}")
    elif cmd == "put":
        s3.upload_file(args[2], args[0], args[1])
        print("{}")
    elif cmd == "delete":
        s3.delete_object(Bucket=args[0], Key=args[1])
        print("{}")
    else:
        print(f"unknown command {cmd}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
