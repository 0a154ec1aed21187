#!/usr/bin/env python3
"""Verify an mVMM payment authorization token with pycose and read its claims with cbor2.

A backend in Python needs nothing from mVMM: the token is a CWT (RFC 8392), a
tagged COSE_Sign1 (ES256) whose payload is a CBOR claims map (docs/tokens.md).

    pip install pycose==1.1.0 cbor2==5.6.5   # pycose 1.1.0 does not work with cbor2 6
    python3 verify_token.py --key card.hex --token token.b64

--key: hex of the credential's SEC1 P-256 public key (04 || x || y), as
       mvmm-sim writes it (target/sim/credentials/<id>.pub).
--token: the token, raw CBOR or base64 (as `mvmm-pay --json pay` prints it).

Prints one JSON object and exits 0 when the signature verifies, 1 when it
does not, 2 when the input cannot be read.
"""

import argparse
import base64
import binascii
import json
import sys

import cbor2
from pycose.algorithms import Es256
from pycose.headers import KID, Algorithm
from pycose.keys.curves import P256
from pycose.keys.ec2 import EC2Key
from pycose.messages import CoseMessage, Sign1Message

# The claim keys (docs/tokens.md).
CLAIMS = {
    7: "cti",
    -65537: "credential",
    -65538: "amount_minor",
    -65539: "currency",
    -65540: "merchant",
    -65541: "displayed_text_sha256",
    -65542: "nonce",
    -65543: "counter",
}


def read_token(path):
    data = open(path, "rb").read()
    if data[:1] == b"\xd2":  # CBOR tag 18: raw COSE_Sign1
        return data
    text = b"".join(data.split()).rstrip(b"=")
    text += b"=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, altchars=b"-_" if b"-" in text or b"_" in text else None, validate=True)
    except binascii.Error as error:
        raise ValueError(f"{path}: neither CBOR nor base64: {error}")


def read_key(path):
    point = bytes.fromhex(open(path).read().strip())
    if len(point) != 65 or point[0] != 4:
        raise ValueError(f"{path}: need the uncompressed SEC1 point (65 bytes, 04 || x || y)")
    return EC2Key(crv=P256, x=point[1:33], y=point[33:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--key", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    try:
        key = read_key(args.key)
        token = read_token(args.token)
    except (OSError, ValueError) as error:
        print(json.dumps({"verified": False, "error": str(error)}))
        return 2

    if token[:1] != b"\xd2":
        print(json.dumps({"verified": False, "error": "not tagged as COSE_Sign1 (tag 18)"}))
        return 1
    message = CoseMessage.decode(token)
    if not isinstance(message, Sign1Message):
        print(json.dumps({"verified": False, "error": "not a COSE_Sign1"}))
        return 1
    algorithm = message.phdr.get(Algorithm)  # alg must be protected
    if algorithm is not Es256:
        print(json.dumps({"verified": False, "error": f"algorithm {algorithm} is not ES256"}))
        return 1
    message.key = key
    verified = message.verify_signature()

    claims = cbor2.loads(message.payload)
    named = {}
    for label, value in claims.items():
        name = CLAIMS.get(label, str(label))
        named[name] = value.hex() if isinstance(value, bytes) else value
    # The payload is deterministic CBOR: re-encoding the decoded map in
    # canonical form gives the same bytes.
    canonical = cbor2.dumps(claims, canonical=True) == message.payload
    print(json.dumps({
        "verified": bool(verified),
        "alg": "ES256",
        "kid": message.get_attr(KID).hex(),
        "canonical_cbor": canonical,
        "claims": named,
    }, sort_keys=True))
    return 0 if verified else 1


if __name__ == "__main__":
    sys.exit(main())
