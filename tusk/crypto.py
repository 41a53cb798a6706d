"""Encryption of secrets at rest: AES-256-GCM under a key derived from SECRET_KEY with HKDF.

Nothing is stored on the filesystem: the key is derived whenever it is needed. Each value is
bound to where it belongs (its `context`, e.g. a workspace and provider) as associated data,
so a ciphertext copied to another row does not decrypt.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = b"\x01"
NONCE_BYTES = 12


class DecryptionFailed(Exception):
    """Wrong key (SECRET_KEY changed?), wrong context, or a damaged value."""


def derive_key(secret_key: str, purpose: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"tusk:{purpose}".encode())
    return hkdf.derive(secret_key.encode())


def encrypt(key: bytes, plaintext: bytes, context: str) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext, context.encode())


def decrypt(key: bytes, blob: bytes, context: str) -> bytes:
    if blob[:1] != VERSION or len(blob) < 1 + NONCE_BYTES + 16:
        raise DecryptionFailed("not a value encrypted by Tusk")
    nonce, ciphertext = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, context.encode())
    except InvalidTag:
        raise DecryptionFailed("the value does not decrypt with this key and context") from None


def mask(secret: str) -> str:
    """`sk-…abcd`: enough to tell keys apart, too little to use one."""
    if len(secret) <= 8:
        return "…" if secret else ""
    head = secret[:3] if secret[2:3] == "-" else secret[:2]
    return f"{head}…{secret[-4:]}"
