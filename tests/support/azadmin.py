"""The test's own hands on Azurite (azure-storage-blob, from the stores'
venv): make the container, then look at and tamper with what the charm
stored. Prints JSON. Usage: azadmin.py BLOB_ENDPOINT COMMAND [ARGS...]"""

import json
import sys

from azure.storage.blob import BlobServiceClient

ACCOUNT = "devstoreaccount1"
# Azurite's documented development key (public, not a secret).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def main(argv):
    endpoint, cmd, args = argv[0], argv[1], argv[2:]
    conn = f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={endpoint};"
    svc = BlobServiceClient.from_connection_string(conn)
    if cmd == "create-container":
        svc.create_container(args[0])
        print("{}")
        return 0
    container = svc.get_container_client(args[0])
    if cmd == "list":
        prefix = args[1] if len(args) > 1 else None
        print(json.dumps([{"key": b.name, "size": b.size} for b in container.list_blobs(name_starts_with=prefix)]))
    elif cmd == "get":
        with open(args[2], "wb") as f:
            f.write(container.download_blob(args[1]).readall())
        print("{}")
    elif cmd == "put":
        with open(args[2], "rb") as f:
            container.upload_blob(args[1], f, overwrite=True)
        print("{}")
    elif cmd == "delete":
        container.delete_blob(args[1])
        print("{}")
    elif cmd == "uncommitted":
        # Blocks staged by uploads that were never committed.
        names = []
        for b in container.list_blobs(include=["uncommittedblobs"]):
            committed, uncommitted = container.get_blob_client(b.name).get_block_list("all")
            if uncommitted:
                names.append(b.name)
        print(json.dumps(names))
    else:
        print(f"unknown command {cmd}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
