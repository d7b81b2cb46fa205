#!/usr/bin/python3
"""Makes JWTs with PyJWT, an implementation independent of orgsplit's, for
the authentication tests. Reads one JSON object on stdin:

  {"alg": "HS256" | "RS256" | "ES256" | "none",
   "key_file": PATH,        # HS256: the secret; RS256/ES256: a private key PEM
   "claims": {...}, "headers": {...},
   "forge": "hs256-with-public-key" | "tamper" (optional)}

and prints the token; or, given {"jwk_of": PATH, "kid": KID}, prints the
public JWK of the private key in PATH (for JWKS files).
"""
import base64
import hashlib
import hmac
import json
import sys

import jwt


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> None:
    spec = json.load(sys.stdin)
    if "jwk_of" in spec:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
        with open(spec["jwk_of"], "rb") as f:
            private = load_pem_private_key(f.read(), password=None)
        public = private.public_key()
        if hasattr(public, "curve"):
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
        else:
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
        jwk["kid"] = spec["kid"]
        print(json.dumps(jwk))
        return
    alg = spec["alg"]
    claims = spec.get("claims", {})
    headers = spec.get("headers", {})
    forge = spec.get("forge")
    key = b""
    if spec.get("key_file"):
        with open(spec["key_file"], "rb") as f:
            key = f.read()

    if forge == "hs256-with-public-key":
        # The classic algorithm-confusion attack: an HS256 token whose HMAC
        # secret is the server's RSA *public* key. PyJWT refuses to sign it,
        # so it is assembled by hand.
        header = {"alg": "HS256", "typ": "JWT", **headers}
        signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
        sig = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
        print(signing_input + "." + b64(sig))
        return
    if alg == "none":
        print(jwt.encode(claims, None, algorithm="none", headers=headers))
        return
    if alg == "HS256":
        key = key.strip()
    token = jwt.encode(claims, key, algorithm=alg, headers=headers or None)
    if forge == "tamper":
        # Change the claims after signing: the signature no longer matches.
        head, body, sig = token.split(".")
        padded = body + "=" * (-len(body) % 4)
        changed = json.loads(base64.urlsafe_b64decode(padded))
        changed["tenant_id"] = "globex"
        changed["sub"] = "tenant-globex"
        token = ".".join([head, b64(json.dumps(changed).encode()), sig])
    print(token)


if __name__ == "__main__":
    main()
